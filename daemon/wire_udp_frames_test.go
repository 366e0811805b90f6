package daemon

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The test of this file writes Ethernet frames by hand on host A's link
// with a packet socket, each frame twice: to a port of host B that only a
// kernel UDP socket has (the daemon does not serve it) and to a port an
// app's PacketConn has on the daemon. What the kernel socket received is
// the expectation: a frame it dropped must not reach the app (the daemon
// drops and counts it, or passes it to the kernel, which drops it), and a
// frame it delivered reaches the app with the same payload and source
// address. Frames from a packet socket carry the checksums as written (no
// offload completes or vouches for them), and neither link's checksum
// offload is touched.

// wireCsum is what a frame's UDP checksum field holds.
type wireCsum uint8

const (
	csumRight wireCsum = iota
	csumWrong          // the right checksum with bits flipped
	csumZero           // 0: none (IPv4), not allowed (IPv6)
)

// wireExt is an IPv6 extension header: its type and what follows its
// next-header and length bytes (6 bytes, plus a multiple of 8).
type wireExt struct {
	typ  uint8
	body []byte
}

// wireFrame describes a frame from host A to a UDP port of host B; its
// zero value is a correct IPv4 datagram.
type wireFrame struct {
	v6       bool
	dstMAC   net.HardwareAddr // nil: B's
	tagged   bool             // an 802.1Q tag with VLAN id vid
	vid      uint16
	src, dst netip.Addr // zero: A's, B's
	hopZero  bool       // TTL or hop limit 0
	ipOpts   []byte     // IPv4 options, a multiple of 4 bytes
	ext      []wireExt  // IPv6 extension headers before UDP
	udpLong  int        // added to the UDP length field
	udpZero  bool       // the UDP length field 0
	trailer  []byte     // in the IP payload after the UDP datagram
	ipLong   int        // added to the IP length field (total or payload length)
	pad      []byte     // after the IP packet, as Ethernet padding
	badIPSum bool       // IPv4 header checksum wrong
	csum     wireCsum
	mf       bool // a first fragment (offset 0, more fragments)
}

// build makes the frame's bytes from host A's link to port of host B,
// carrying payload.
func (f wireFrame) build(rig *nstest.Pair, port uint16, payload []byte, id uint16) []byte {
	src, dst := f.src, f.dst
	if !src.IsValid() {
		src = map[bool]netip.Addr{false: rig.A.IPv4, true: rig.A.IPv6}[f.v6]
	}
	if !dst.IsValid() {
		dst = map[bool]netip.Addr{false: rig.B.IPv4, true: rig.B.IPv6}[f.v6]
	}
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], 4321)
	binary.BigEndian.PutUint16(u[2:], port)
	if !f.udpZero {
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)+f.udpLong))
	}
	copy(u[8:], payload)
	if f.mf {
		// A fragment with more to follow carries a multiple of 8
		// bytes of its datagram.
		u = append(u, make([]byte, (8-len(u)%8)%8)...)
	}
	ps := sum(sum(0, src.AsSlice()), dst.AsSlice()) + unix.IPPROTO_UDP + uint32(len(u))
	c := csum(ps, u)
	if c == 0 {
		c = 0xffff
	}
	switch f.csum {
	case csumWrong:
		c ^= 0x0f0f
	case csumZero:
		c = 0
	}
	binary.BigEndian.PutUint16(u[6:], c)
	l4 := append(u, f.trailer...)

	var ip []byte
	hop := byte(64)
	if f.hopZero {
		hop = 0
	}
	if !f.v6 {
		hl := 20 + len(f.ipOpts)
		ip = make([]byte, hl, hl+len(l4))
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(l4)+f.ipLong))
		binary.BigEndian.PutUint16(ip[4:], id)
		if f.mf {
			binary.BigEndian.PutUint16(ip[6:], 0x2000)
		}
		ip[8], ip[9] = hop, unix.IPPROTO_UDP
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		copy(ip[20:], f.ipOpts)
		s := csum(0, ip)
		if f.badIPSum {
			s ^= 0x0101
		}
		binary.BigEndian.PutUint16(ip[10:], s)
		ip = append(ip, l4...)
	} else {
		var ext []byte
		next := byte(unix.IPPROTO_UDP)
		if f.mf {
			fh := make([]byte, 8)
			fh[0] = next
			binary.BigEndian.PutUint16(fh[2:], 1) // offset 0, M set
			binary.BigEndian.PutUint32(fh[4:], uint32(id))
			ext, next = fh, unix.IPPROTO_FRAGMENT
		}
		for i := len(f.ext) - 1; i >= 0; i-- {
			e := f.ext[i]
			h := append([]byte{next, byte((2+len(e.body))/8 - 1)}, e.body...)
			ext, next = append(h, ext...), e.typ
		}
		ip = make([]byte, 40, 40+len(ext)+len(l4))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)+f.ipLong))
		ip[6], ip[7] = next, hop
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
		ip = append(append(ip, ext...), l4...)
	}
	dmac := f.dstMAC
	if dmac == nil {
		dmac = rig.B.MAC
	}
	eth := append(append([]byte{}, dmac...), rig.A.MAC...)
	if f.tagged {
		eth = binary.BigEndian.AppendUint16(eth, unix.ETH_P_8021Q)
		eth = binary.BigEndian.AppendUint16(eth, f.vid)
	}
	eth = binary.BigEndian.AppendUint16(eth, map[bool]uint16{false: unix.ETH_P_IP, true: unix.ETH_P_IPV6}[f.v6])
	return append(append(eth, ip...), f.pad...)
}

// The addresses of host B's second interface (TestWireUDPFramesAsKernel).
var (
	wireOtherIfc4 = netip.MustParseAddr("10.78.0.1")
	wireOtherIfc6 = netip.MustParseAddr("fd78::1")
)

// wireCase is one frame of the test.
type wireCase struct {
	name string
	f    wireFrame
}

// wireCases are the frames: a correct datagram of each family first, then
// the ones a host's stack judges.
func wireCases(rig *nstest.Pair) []wireCase {
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	padN := []byte{1, 4, 0, 0, 0, 0} // PadN: 4 bytes of padding
	junk := []byte("JUNKJUNK")
	var cs []wireCase
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "ipv4", true: "ipv6"}[v6]
		add := func(name string, f wireFrame) {
			f.v6 = v6
			cs = append(cs, wireCase{name: fam + " " + name, f: f})
		}
		own := map[bool]netip.Addr{false: rig.B.IPv4, true: rig.B.IPv6}[v6]
		loop := map[bool]netip.Addr{false: netip.MustParseAddr("127.0.0.1"), true: netip.IPv6Loopback()}[v6]
		mcast := map[bool]netip.Addr{false: netip.MustParseAddr("224.0.0.1"), true: netip.MustParseAddr("ff02::1")}[v6]
		add("correct datagram", wireFrame{})
		add("bad udp checksum", wireFrame{csum: csumWrong})
		add("udp checksum 0", wireFrame{csum: csumZero})
		add("udp length beyond the ip payload", wireFrame{udpLong: 8})
		add("udp length short of the ip payload", wireFrame{trailer: junk})
		add("ip length beyond the frame", wireFrame{ipLong: 8})
		add("ip length short of the frame (padding)", wireFrame{pad: junk})
		add("to another host's mac", wireFrame{dstMAC: other})
		add("to the broadcast mac", wireFrame{dstMAC: bcast})
		add("hop limit 0", wireFrame{hopZero: true})
		// IPv4: the kernel drops it (fib_validate_source, accept_local
		// off), the worker too (local-source); IPv6: both take it.
		add("from the host's own address", wireFrame{src: own})
		add("from an address of another interface of the host", wireFrame{src: map[bool]netip.Addr{false: wireOtherIfc4, true: wireOtherIfc6}[v6]})
		add("from loopback", wireFrame{src: loop})
		add("from multicast", wireFrame{src: mcast})
		add("vlan-tagged (id 100)", wireFrame{tagged: true, vid: 100})
		add("priority-tagged (vlan id 0)", wireFrame{tagged: true, vid: 0x6000})
		add("first fragment alone", wireFrame{mf: true})
		if !v6 {
			// Not the host's addresses either: the XDP program passes
			// them (not_local), and the kernel hands them to the
			// port's reservation, which the daemon reads for the app.
			p := netip.PrefixFrom(rig.B.IPv4, nstest.PrefixLen4).Masked()
			sub := p.Addr().As4()
			for i := nstest.PrefixLen4 / 8; i < 4; i++ {
				sub[i] = 0xff
			}
			add("to the subnet broadcast", wireFrame{dstMAC: bcast, dst: netip.AddrFrom4(sub)})
			add("to the limited broadcast", wireFrame{dstMAC: bcast, dst: netip.AddrFrom4([4]byte{255, 255, 255, 255})})
		}
		// The XDP program passes it to the kernel (not_local), which,
		// not forwarding, drops it.
		add("to an address not the host's", wireFrame{dst: map[bool]netip.Addr{false: netip.MustParseAddr("10.77.0.9"), true: netip.MustParseAddr("fd77::9")}[v6]})
		if !v6 {
			add("bad ip header checksum", wireFrame{badIPSum: true})
			add("ip options (nop, eol)", wireFrame{ipOpts: []byte{1, 1, 1, 0}})
			add("ip option malformed (record route, length 2)", wireFrame{ipOpts: []byte{7, 2, 0, 0}})
			add("from the limited broadcast", wireFrame{src: netip.MustParseAddr("255.255.255.255")})
			add("from 0.0.0.0", wireFrame{src: netip.IPv4Unspecified()})
		} else {
			add("hop-by-hop and destination options", wireFrame{ext: []wireExt{{0, padN}, {60, padN}}})
			add("destination option unknown, discard", wireFrame{ext: []wireExt{{60, []byte{0x5e, 2, 0, 0, 1, 0}}}})
			add("hop-by-hop not first", wireFrame{ext: []wireExt{{60, padN}, {0, padN}}})
			// The XDP program passes it (bad_length) and the kernel
			// takes the length from the IP header (a jumbogram's rule);
			// the daemon's socket on the port, the kernel path, gets
			// it and queues it for the app.
			add("udp length 0", wireFrame{udpZero: true})
		}
	}
	return cs
}

// wireGot is one datagram a socket received.
type wireGot struct {
	data string
	from netip.AddrPort
}

// collectDgrams reads datagrams from each of pcs into a channel until
// they are closed.
func collectDgrams(pcs ...net.PacketConn) <-chan wireGot {
	ch := make(chan wireGot, 256)
	for _, pc := range pcs {
		go func() {
			b := make([]byte, 65536)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				u, _ := from.(*net.UDPAddr)
				var ap netip.AddrPort
				if u != nil {
					ap = u.AddrPort()
					ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				}
				ch <- wireGot{string(b[:n]), ap}
			}
		}()
	}
	return ch
}

// checksumOffloads returns the checksum lines of ethtool -k for h's link;
// an ethtool that fails, or says nothing of them, fails the test.
func checksumOffloads(t *testing.T, h *nstest.Host) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.Name, "ethtool", "-k", h.Link).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s in %s: %v %s", h.Link, h.Name, err, out)
	}
	var l []string
	for _, s := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(s, "rx-checksumming:") || strings.HasPrefix(s, "tx-checksumming:") {
			l = append(l, strings.TrimSpace(strings.TrimSuffix(s, " [fixed]")))
		}
	}
	if len(l) != 2 {
		t.Fatalf("ethtool -k %s in %s: %d checksum lines: %s", h.Link, h.Name, len(l), out)
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

// TestWireUDPFramesAsKernel: hand-built frames from host A (correct
// datagrams, bad and zero UDP checksums, UDP and IP length fields that
// disagree with the frame, Ethernet padding, IPv4 options, IPv6 extension
// headers, another host's or the broadcast MAC, hop limit 0, martian
// sources, an address not B's, a VLAN tag B has no interface for, a first
// fragment whose datagram never completes) each reach a kernel UDP socket
// of host B and an app's PacketConn on the daemon serving B's link: the
// app receives exactly the frames the kernel socket received, with the
// same payload and source address, and the daemon counts what it drops.
// The links' checksum offloads stay as veth sets them (on).
func TestWireUDPFramesAsKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	// Another interface of host B, with addresses of its own (the
	// source of a case below).
	for _, args := range [][]string{
		{"link", "add", "xsother", "type", "veth", "peer", "name", "xsother-peer"},
		{"addr", "add", wireOtherIfc4.String() + "/24", "dev", "xsother"},
		{"addr", "add", wireOtherIfc6.String() + "/64", "dev", "xsother", "nodad"},
		{"link", "set", "xsother", "up"},
	} {
		ipIn(t, rig.B, args...)
	}
	offA, offB := checksumOffloads(t, rig.A), checksumOffloads(t, rig.B)
	for _, o := range []string{offA, offB} {
		if o != "rx-checksumming: on, tx-checksumming: on" {
			t.Fatalf("checksum offloads %q, want veth's defaults (on)", o)
		}
	}
	d := startDaemon(t, onB(rig))
	if a, b := checksumOffloads(t, rig.A), checksumOffloads(t, rig.B); a != offA || b != offB {
		t.Fatalf("checksum offloads changed by the daemon: A %q to %q, B %q to %q", offA, a, offB, b)
	}
	a := attach(t, d, app.Options{Name: "wire", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	const kport, aport = 7310, 7311
	k4 := kernelUDP(t, rig.B, "udp4", fmt.Sprintf("0.0.0.0:%d", kport))
	k6 := kernelUDP(t, rig.B, "udp6", fmt.Sprintf("[::]:%d", kport))
	var apcs []net.PacketConn
	for _, uri := range []string{fmt.Sprintf("udp://0.0.0.0:%d", aport), fmt.Sprintf("udp://[::]:%d", aport)} {
		pc, err := a.ListenPacket(uri)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		apcs = append(apcs, pc)
	}
	kch, ach := collectDgrams(k4, k6), collectDgrams(apcs...)
	eng := d.Engine()
	if eng == nil {
		t.Fatal("the daemon has no datapath engine")
	}

	var fd int
	if err := rig.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	send := func(f []byte) {
		t.Helper()
		sa := &unix.SockaddrLinklayer{Ifindex: rig.A.IfIndex, Halen: 6, Protocol: htons(binary.BigEndian.Uint16(f[12:]))}
		copy(sa.Addr[:], f[:6])
		if err := unix.Sendto(fd, f, 0, sa); err != nil {
			t.Fatalf("send: %v", err)
		}
	}

	kgot, agot := map[string][]wireGot{}, map[string][]wireGot{}
	// take files what a socket received under its case's key (the
	// payload's first 7 bytes, "wire NN") and reports a marker's.
	take := func(m map[string][]wireGot, g wireGot) string {
		if strings.HasPrefix(g.data, "mark ") {
			return g.data
		}
		m[g.data[:min(7, len(g.data))]] = append(m[g.data[:min(7, len(g.data))]], g)
		return ""
	}
	cases := wireCases(rig)
	type verdict struct{ drops, xdp string }
	verdicts := make([]verdict, len(cases))
	var id uint16 = 1000
	for i, c := range cases {
		before := eng.Stats()
		payload := []byte(fmt.Sprintf("wire %02d %s", i, c.name))
		id++
		send(c.f.build(rig, kport, payload, id))
		id++
		send(c.f.build(rig, aport, payload, id))
		// A correct datagram behind it to each port: when both have
		// come, each path has judged the frame before it.
		mark := []byte(fmt.Sprintf("mark %02d", i))
		mf := wireFrame{v6: c.f.v6}
		id++
		send(mf.build(rig, kport, mark, id))
		id++
		send(mf.build(rig, aport, mark, id))
		kmark, amark := false, false
		for end := time.After(3 * time.Second); !kmark || !amark; {
			select {
			// take first: a datagram that comes after its side's
			// marker (the kernel path's trails the AF_XDP socket's) is
			// filed all the same.
			case g := <-kch:
				kmark = take(kgot, g) == string(mark) || kmark
			case g := <-ach:
				amark = take(agot, g) == string(mark) || amark
			case <-end:
				t.Fatalf("%s: the correct datagram behind it did not come (kernel %v, app %v); engine %+v", c.name, kmark, amark, eng.Stats().Totals)
			}
		}
		after := eng.Stats()
		for end := time.Now().Add(time.Second); after.Totals.Delivered < before.Totals.Delivered+1 && time.Now().Before(end); after = eng.Stats() {
			time.Sleep(5 * time.Millisecond)
		}
		verdicts[i] = verdict{drops: counterDelta(before.Totals.Drops, after.Totals.Drops), xdp: counterDelta(before.BPF, after.BPF)}
	}
	// What the kernel path (the reservation of the app's port) reads may
	// trail the markers, which came through the AF_XDP socket: wait
	// 300 ms for more, and up to 3 s for the app to catch up with the
	// kernel socket.
	behind := func() bool {
		for key, g := range kgot {
			if len(agot[key]) < len(g) {
				return true
			}
		}
		return false
	}
	for settle, end := time.Now().Add(300*time.Millisecond), time.Now().Add(3*time.Second); time.Now().Before(settle) || behind() && time.Now().Before(end); {
		select {
		case g := <-kch:
			take(kgot, g)
		case g := <-ach:
			take(agot, g)
		case <-time.After(20 * time.Millisecond):
		}
	}

	for i, c := range cases {
		key := fmt.Sprintf("wire %02d", i)
		k, ap := kgot[key], agot[key]
		desc := func(g []wireGot) string {
			if len(g) == 0 {
				return "dropped"
			}
			s := make([]string, len(g))
			for j, x := range g {
				s[j] = fmt.Sprintf("%q from %v", x.data[len(key):], x.from)
			}
			return "delivered " + strings.Join(s, ", ")
		}
		t.Logf("%-52s kernel: %-8s app: %-8s daemon: drops %s, xdp %s", c.name, first(desc(k)), first(desc(ap)), verdicts[i].drops, verdicts[i].xdp)
		switch {
		case len(ap) > len(k):
			t.Errorf("%s: the kernel socket %s, the app %s", c.name, desc(k), desc(ap))
		case len(ap) < len(k):
			t.Errorf("%s: the kernel socket %s, the app %s", c.name, desc(k), desc(ap))
		default:
			for j := range k {
				if k[j].data != ap[j].data || k[j].from.Addr() != ap[j].from.Addr() || k[j].from.Port() != ap[j].from.Port() {
					t.Errorf("%s: the kernel socket %s, the app %s", c.name, desc(k), desc(ap))
				}
			}
		}
	}
}

// first returns s's first word.
func first(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
}

// counterDelta lists the counters of after that grew since before.
func counterDelta(before, after map[string]uint64) string {
	var s []string
	for k, v := range after {
		if v > before[k] {
			s = append(s, fmt.Sprintf("%s+%d", k, v-before[k]))
		}
	}
	sort.Strings(s)
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}
