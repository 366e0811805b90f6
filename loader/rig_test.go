package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func netnsPath(h *nstest.Host) string { return filepath.Join("/run/netns", h.Name) }

func listenUDP(h *nstest.Host, addr netip.AddrPort) (c *net.UDPConn, err error) {
	err = h.Do(func() error {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

func dialUDP(h *nstest.Host, addr netip.AddrPort) (c *net.UDPConn, err error) {
	err = h.Do(func() error {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// expectKernel reads one datagram with the given payload from c.
func expectKernel(t *testing.T, c *net.UDPConn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("kernel socket %v: %v", c.LocalAddr(), err)
	}
	if string(buf[:n]) != want {
		t.Fatalf("kernel socket %v got %q, want %q", c.LocalAddr(), buf[:n], want)
	}
}

// expectNothing checks that c receives nothing within a short wait.
func expectNothing(t *testing.T, c *net.UDPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 2048)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("kernel socket %v received %q while its port is steered", c.LocalAddr(), buf[:n])
	}
}

// collect receives from all sockets until want frames arrived or 3 s
// passed, and returns the UDP payloads per destination port.
func collect(t *testing.T, socks []*testXSK, want int) (frames int, perQueue []int, byPort map[uint16][]string) {
	t.Helper()
	byPort = map[uint16][]string{}
	perQueue = make([]int, len(socks))
	deadline := time.Now().Add(3 * time.Second)
	for frames < want && time.Now().Before(deadline) {
		for q, x := range socks {
			got, err := x.Receive(20 * time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range got {
				frames++
				perQueue[q]++
				p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
				if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
					byPort[uint16(u.DstPort)] = append(byPort[uint16(u.DstPort)], string(u.Payload))
				}
			}
		}
	}
	return frames, perQueue, byPort
}

// TestRigSteering attaches the program to host B's veth and checks, with
// host A's kernel as the peer, that ARP, ND, ICMP and other UDP ports still
// reach B's kernel while UDP port 9000 lands in AF_XDP sockets, and that
// removing the listener gives the port back to the kernel.
func TestRigSteering(t *testing.T) {
	for _, mode := range []Mode{ModeNative, ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) { testRigSteering(t, mode) })
	}
}

func testRigSteering(t *testing.T, mode Mode) {
	const queues = 2
	p := nstest.NewPair(t, nstest.Options{Queues: queues})
	o := loadObjects(t, ObjectsOptions{Queues: queues})
	att, err := o.Attach(AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if att.Mode() != mode || att.IfIndex() != p.B.IfIndex || att.Takeover() != TakeoverNone {
		t.Fatalf("attached in %v mode to index %d (takeover %v), want %v mode to %d", att.Mode(), att.IfIndex(), att.Takeover(), mode, p.B.IfIndex)
	}
	checkAttached(t, p.B, o, mode)
	checkPins(t, att, o)

	socks := make([]*testXSK, queues)
	if err := p.B.Do(func() error {
		for q := range socks {
			x, err := newTestXSK(p.B.IfIndex, q, 64)
			if err != nil {
				return err
			}
			socks[q] = x
			t.Cleanup(func() { x.Close() })
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for q, x := range socks {
		if err := o.XSKs.Set(q, x.FD()); err != nil {
			t.Fatal(err)
		}
	}
	l4 := listener(flow.TransportUDP, p.B.IPv4, 9000)
	l6 := listener(flow.TransportUDP, zero6, 9000)
	for _, l := range []flow.FiveTuple{l4, l6} {
		if err := o.Listeners.Put(p.B.IfIndex, l, Value{Handle: 1, FIB: 1}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := o.Counters.Read()
	if err != nil {
		t.Fatal(err)
	}

	// The kernel keeps ARP, ND and ICMP.
	for _, dst := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		if err := p.A.Ping(dst); err != nil {
			t.Fatalf("ping %v: %v", dst, err)
		}
	}
	checkNeighbours(t, p)

	// B's kernel sockets: 9001 (never steered) and 9000 (steered for now).
	var kern9000, kern9001 []*net.UDPConn
	for _, a := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		c0, err := listenUDP(p.B, netip.AddrPortFrom(a, 9000))
		if err != nil {
			t.Fatal(err)
		}
		c1, err := listenUDP(p.B, netip.AddrPortFrom(a, 9001))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c0.Close(); c1.Close() })
		kern9000, kern9001 = append(kern9000, c0), append(kern9001, c1)
	}
	const n = 8
	for i, a := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		to9001, err := dialUDP(p.A, netip.AddrPortFrom(a, 9001))
		if err != nil {
			t.Fatal(err)
		}
		defer to9001.Close()
		if _, err := to9001.Write([]byte("kernel-9001")); err != nil {
			t.Fatal(err)
		}
		expectKernel(t, kern9001[i], "kernel-9001")
		// Several source ports, so that both queues get some.
		for j := 0; j < n; j++ {
			c, err := dialUDP(p.A, netip.AddrPortFrom(a, 9000))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte(fmt.Sprintf("xsk-%d-%d", i, j))); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	frames, perQueue, byPort := collect(t, socks, 2*n)
	if frames != 2*n || len(byPort[9000]) != 2*n {
		t.Fatalf("AF_XDP sockets got %d frames (%d to port 9000), want %d", frames, len(byPort[9000]), 2*n)
	}
	t.Logf("%v mode: frames per queue %v", mode, perQueue)
	for _, c := range kern9000 {
		expectNothing(t, c)
	}
	after, err := o.Counters.Read()
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.Redirect != 2*n || d.ListenerExactHit != n || d.ListenerWildcardHit != n || d.NoXSK != 0 {
		t.Errorf("counters:%s", fmtCounters(d))
	}
	// At least: an ARP request; ICMP echo, a neighbour solicitation and ICMPv6 echo; the datagrams to 9001.
	if d.NotIP == 0 || d.NotL4 < 3 || d.NoMatch < 2 {
		t.Errorf("ARP, ICMP and port 9001 not all counted as passed:%s", fmtCounters(d))
	}

	// Remove the listeners: port 9000 is the kernel's again.
	for _, l := range []flow.FiveTuple{l4, l6} {
		if err := o.Listeners.Delete(p.B.IfIndex, l); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		c, err := dialUDP(p.A, netip.AddrPortFrom(a, 9000))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("kernel-9000")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		expectKernel(t, kern9000[i], "kernel-9000")
	}
	if frames, _, _ := collect(t, socks, 1); frames != 0 {
		t.Fatalf("AF_XDP sockets got %d frames after the listeners were removed", frames)
	}

	dir := att.PinDir()
	if err := att.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s still there after Close: %v", dir, err)
	}
	checkDetached(t, p.B)
}

func xdpState(t *testing.T, h *nstest.Host) *netlink.LinkXdp {
	t.Helper()
	nh, err := netlink.NewHandleAt(h.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByIndex(h.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Xdp == nil {
		return &netlink.LinkXdp{}
	}
	return l.Attrs().Xdp
}

// checkAttached checks through netlink that h's interface runs o's program
// in mode.
func checkAttached(t *testing.T, h *nstest.Host, o *Objects, mode Mode) {
	t.Helper()
	x := xdpState(t, h)
	info, err := o.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	if !x.Attached || ebpf.ProgramID(x.ProgId) != id {
		t.Fatalf("netlink: attached %v prog %d, want prog %d", x.Attached, x.ProgId, id)
	}
	if m, ok := modeOfAttached(x.AttachMode); !ok || m != mode {
		t.Fatalf("netlink: attach mode %d, want %v", x.AttachMode, mode)
	}
}

func checkDetached(t *testing.T, h *nstest.Host) {
	t.Helper()
	if x := xdpState(t, h); x.Attached {
		t.Fatalf("netlink: %s still runs xdp prog %d", h.Link, x.ProgId)
	}
}

// checkPins checks that the attachment's pins are o's maps.
func checkPins(t *testing.T, att *Attachment, o *Objects) {
	t.Helper()
	m := o.objs.xsessionMaps
	for name, want := range map[string]*ebpf.Map{PinListeners: m.Listeners, PinEstablished: m.Established, PinXSKs: m.Xsks, PinCounters: m.Counters, PinPorts: m.Ports, PinFragments: m.Fragments} {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(att.PinDir(), name), nil)
		if err != nil {
			t.Fatalf("pinned map %s: %v", name, err)
		}
		pi, _ := pinned.Info()
		wi, _ := want.Info()
		pid, _ := pi.ID()
		wid, _ := wi.ID()
		pinned.Close()
		if pid != wid {
			t.Fatalf("pin %s is map %d, want %d", name, pid, wid)
		}
	}
	if _, err := os.Stat(filepath.Join(att.PinDir(), PinLink)); err != nil {
		t.Fatalf("link pin: %v", err)
	}
}

// checkNeighbours checks that A's kernel resolved B's MAC for both families.
func checkNeighbours(t *testing.T, p *nstest.Pair) {
	t.Helper()
	nh, err := netlink.NewHandleAt(p.A.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := nh.NeighList(p.A.IfIndex, fam)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range neighs {
			a, _ := netip.AddrFromSlice(n.IP)
			if (a.Unmap() == p.B.IPv4 || a == p.B.IPv6) && n.HardwareAddr.String() == p.B.MAC.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("A has no neighbour entry for B (family %d): %v", fam, neighs)
		}
	}
}

func netipAddrPort(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
