package daemon

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestReassemblyTimeoutsFollowKernel: the fragments of a datagram get as
// long as the namespace's kernel gives its own reassembly, each family
// its own setting (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time; 30 s and
// 60 s by default), when the configuration names none. Here they are 1 s
// and 4 s, and the rest of each datagram comes 2 s after its first
// fragment: the IPv4 datagram is dropped (reasm_timeout) and the IPv6 one
// delivered, to the app as to a kernel socket on the same host. Before,
// the daemon gave both families 30 s and delivered both.
func TestReassemblyTimeoutsFollowKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := rig.B.Do(func() error {
		for file, v := range map[string]string{"ipv4/ipfrag_time": "1", "ipv6/ip6frag_time": "4"} {
			if err := os.WriteFile("/proc/sys/net/"+file, []byte(v), 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "fragtime", RxFifoSize: 1 << 20, TxFifoSize: 1 << 16, SegmentSize: 16 << 20})
	snd := newFragSender(t, rig)
	type target struct {
		v6   bool
		name string
		pc   net.PacketConn
		dg   []byte
	}
	payload := fragFill(7, 3000)
	var targets []*target
	for _, v6 := range []bool{false, true} {
		fam, uri, kaddr := "ipv4", "udp://0.0.0.0:0", netip.AddrPortFrom(rig.B.IPv4, 0)
		if v6 {
			fam, uri, kaddr = "ipv6", "udp://[::]:0", netip.AddrPortFrom(rig.B.IPv6, 0)
		}
		pc, err := a.ListenPacket(uri)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		k, err := rig.B.ListenUDP(kaddr, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		for _, c := range []struct {
			who string
			pc  net.PacketConn
		}{{"app", pc}, {"kernel socket", k}} {
			port := c.pc.LocalAddr().(*net.UDPAddr).Port
			targets = append(targets, &target{v6, fam + " " + c.who, c.pc, snd.datagram(v6, port, payload)})
		}
	}
	s0 := d.Engine().Stats()
	base := snd.id // send takes the next id for each datagram
	for _, tg := range targets {
		if err := snd.send(tg.v6, tg.dg, []fragPiece{{0, 1400, true}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	for i, tg := range targets {
		snd.id = base + uint32(i) // the first fragment's id
		if err := snd.send(tg.v6, tg.dg, []fragPiece{{1400, 2800, true}, {2800, len(tg.dg), false}}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 65536)
	for _, tg := range targets {
		tg.pc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := tg.pc.ReadFrom(buf)
		got := err == nil && bytes.Equal(buf[:n], payload)
		if got == !tg.v6 {
			t.Errorf("%s: delivered %v (%d bytes, %v); want %v: the rest came 2 s after the first fragment, the timeout is %s",
				tg.name, got, n, err, tg.v6, map[bool]string{false: "1 s", true: "4 s"}[tg.v6])
		}
	}
	s1 := d.Engine().Stats()
	if n := s1.Totals.Drops["reasm-timeout"] - s0.Totals.Drops["reasm-timeout"]; n < 1 {
		t.Errorf("reasm-timeout %d, want the IPv4 datagram counted (drops %v)", n, s1.Totals.Drops)
	}
}
