package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// mcReader is a kernel UDP socket joined to a multicast group on a
// host's link, reading with the packet's TTL or hop limit.
type mcReader struct {
	c   net.PacketConn
	p4  *ipv4.PacketConn
	p6  *ipv6.PacketConn
	buf []byte
}

func joinGroup(t *testing.T, h *nstest.Host, group netip.AddrPort) *mcReader {
	t.Helper()
	r := &mcReader{buf: make([]byte, 65536)}
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		network := "udp4"
		if group.Addr().Is6() {
			network = "udp6"
		}
		if r.c, err = net.ListenPacket(network, fmt.Sprintf(":%d", group.Port())); err != nil {
			return err
		}
		g := &net.UDPAddr{IP: group.Addr().AsSlice()}
		if group.Addr().Is4() {
			r.p4 = ipv4.NewPacketConn(r.c)
			if err := r.p4.JoinGroup(ifi, g); err != nil {
				return err
			}
			return r.p4.SetControlMessage(ipv4.FlagTTL, true)
		}
		r.p6 = ipv6.NewPacketConn(r.c)
		if err := r.p6.JoinGroup(ifi, g); err != nil {
			return err
		}
		return r.p6.SetControlMessage(ipv6.FlagHopLimit, true)
	}); err != nil {
		t.Fatalf("join %v in %s: %v", group, h.Name, err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// read returns the next datagram, its sender and its TTL or hop limit.
func (r *mcReader) read(t *testing.T) ([]byte, netip.AddrPort, int) {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if r.p4 != nil {
		n, cm, from, err := r.p4.ReadFrom(r.buf)
		if err != nil || cm == nil {
			t.Fatalf("multicast read: %v (control %v)", err, cm)
		}
		return r.buf[:n], from.(*net.UDPAddr).AddrPort(), cm.TTL
	}
	n, cm, from, err := r.p6.ReadFrom(r.buf)
	if err != nil || cm == nil {
		t.Fatalf("multicast read: %v (control %v)", err, cm)
	}
	return r.buf[:n], from.(*net.UDPAddr).AddrPort(), cm.HopLimit
}

// TestUDPMulticastSend: an app's datagrams to a multicast group go out as
// a kernel UDP socket's do (the reference, sent from host B's kernel in
// the same rig): to the group's MAC, with a TTL or hop limit of 1, larger
// than a frame too, from a PacketConn and from a Conn dialled to the
// group, and a copy reaches the host's own sockets that joined the group
// (IP_MULTICAST_LOOP). With no route for the group, a dial fails with
// ENETUNREACH as the kernel's connect does; a TCP dial to a group fails
// with ENETUNREACH at once.
func TestUDPMulticastSend(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "multicast"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	g4 := netip.AddrPortFrom(netip.MustParseAddr("239.1.2.3"), 7611)
	g6 := netip.AddrPortFrom(netip.MustParseAddr("ff0e::1:3"), 7612)

	// No route for the IPv4 group on B yet (the rig has none, nor a
	// default one): B's kernel refuses the connect, and so does Dial.
	var kerr error
	if err := rig.B.Do(func() error {
		c, err := net.Dial("udp4", g4.String())
		if err == nil {
			c.Close()
		}
		kerr = err
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(kerr, syscall.ENETUNREACH) {
		t.Fatalf("the reference: B's kernel dial to %v without a route: %v, want ENETUNREACH", g4, kerr)
	}
	if c, err := a.Dial(ctx, "udp://"+g4.String()); err == nil || !errors.Is(err, syscall.ENETUNREACH) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial %v without a route: %v, want ENETUNREACH", g4, err)
	}
	ipIn(t, rig.B, "route", "add", "224.0.0.0/4", "dev", rig.B.Link)

	for _, g := range []netip.AddrPort{g4, g6} {
		t.Run(g.Addr().String(), func(t *testing.T) {
			onA := joinGroup(t, rig.A, g)
			onB := joinGroup(t, rig.B, g) // a socket of the sending host

			// The reference: B's kernel socket.
			var local netip.AddrPort
			if err := rig.B.Do(func() error {
				c, err := net.Dial("udp", g.String())
				if err != nil {
					return err
				}
				defer c.Close()
				local = c.LocalAddr().(*net.UDPAddr).AddrPort()
				_, err = c.Write([]byte("kernel"))
				return err
			}); err != nil {
				t.Fatalf("the reference: B's kernel socket to %v: %v", g, err)
			}
			if p, from, ttl := onA.read(t); string(p) != "kernel" || from != local || ttl != 1 {
				t.Fatalf("the reference: A read %q from %v, TTL %d", p, from, ttl)
			}
			if p, _, _ := onB.read(t); string(p) != "kernel" {
				t.Fatalf("the reference: B's own member read %q", p)
			}

			listen := "udp://0.0.0.0:7610"
			if g.Addr().Is6() {
				listen = "udp://[::]:7610"
			}
			pc, err := a.ListenPacket(listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			src := rig.B.IPv4
			if g.Addr().Is6() {
				src = rig.B.IPv6
			}
			for _, size := range []int{64, 3000} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(g)); err != nil {
					t.Fatalf("WriteTo %v: %v", g, err)
				}
				p, from, ttl := onA.read(t)
				if !bytes.Equal(p, msg) || from != netip.AddrPortFrom(src, 7610) || ttl != 1 {
					t.Fatalf("%d bytes to %v: A read %d bytes from %v, TTL %d", size, g, len(p), from, ttl)
				}
				if p, from, _ := onB.read(t); !bytes.Equal(p, msg) || from.Port() != 7610 {
					t.Fatalf("%d bytes to %v: B's own member read %d bytes from %v", size, g, len(p), from)
				}
			}
			// Don't fragment: one larger than the link's MTU fails at once
			// with EMSGSIZE, as a kernel socket's with IP_PMTUDISC_DO
			// (IPV6_DONTFRAG); one that fits goes.
			if err := pc.(*app.PacketConn).SetDontFragment(true); err != nil {
				t.Fatal(err)
			}
			if _, err := pc.WriteTo(make([]byte, 3000), net.UDPAddrFromAddrPort(g)); !errors.Is(err, syscall.EMSGSIZE) {
				t.Fatalf("3,000 bytes to %v, don't fragment: %v, want EMSGSIZE", g, err)
			}
			if _, err := pc.WriteTo([]byte("whole"), net.UDPAddrFromAddrPort(g)); err != nil {
				t.Fatal(err)
			}
			if p, _, _ := onA.read(t); string(p) != "whole" {
				t.Fatalf("A read %q after the refused one, want \"whole\"", p)
			}
			onB.read(t)
			if err := pc.(*app.PacketConn).SetDontFragment(false); err != nil {
				t.Fatal(err)
			}

			c, err := a.Dial(ctx, "udp://"+g.String())
			if err != nil {
				t.Fatalf("Dial %v: %v", g, err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("dialled")); err != nil {
				t.Fatal(err)
			}
			if p, from, ttl := onA.read(t); string(p) != "dialled" || from != c.LocalAddr().(*net.UDPAddr).AddrPort() || ttl != 1 {
				t.Fatalf("A read %q from %v (the Conn is %v), TTL %d", p, from, c.LocalAddr(), ttl)
			}

			start := time.Now()
			tc, err := a.Dial(ctx, "tcp://"+g.String())
			if err == nil {
				tc.Close()
			}
			if !errors.Is(err, syscall.ENETUNREACH) || time.Since(start) > time.Second {
				t.Fatalf("TCP to %v: %v after %v, want ENETUNREACH at once", g, err, time.Since(start))
			}
		})
	}
	if drops := d.EngineStats().Totals.Drops; len(drops) > 0 {
		t.Errorf("drops %v", drops)
	}
}

// groupMember is what golang.org/x/net/ipv4's and ipv6's PacketConn and
// the library's PacketConn have in common to join and leave groups.
type groupMember interface {
	JoinGroup(ifi *net.Interface, group net.Addr) error
	LeaveGroup(ifi *net.Interface, group net.Addr) error
}

var _ groupMember = (*app.PacketConn)(nil)

// TestUDPMulticastReceive: an app's PacketConn receives a multicast
// group's datagrams after JoinGroup, as a kernel UDP socket does after
// x/net's JoinGroup (the reference: such a socket on host B, beside the
// daemon's datapath, taken through the same steps before the app, each
// alone a member of the group): a datagram host A's kernel sends to the
// group is read with A's address as its sender, one larger than a frame
// too; one sent before the join is not, nor one to a group not joined,
// nor one sent after LeaveGroup. A second join fails with EADDRINUSE, a
// leave of a group not joined with EADDRNOTAVAIL, a join of a unicast
// address with EINVAL, as the kernel's do. The interface goes by name
// (the test's netns has no such link; the daemon finds it in B's); with
// none named, the route to the group picks it: for IPv4 the rig has no
// route to the groups at first, and the join fails (ENODEV) until it has
// one; IPv6 has its multicast routes by default. A listener of both
// families joins on the bind of the group's family; one of the other
// family fails. The memberships go with the listener's Close.
func TestUDPMulticastReceive(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "multicast-rx"})
	var ifiA, ifiB *net.Interface
	if err := rig.A.Do(func() (err error) { ifiA, err = net.InterfaceByName(rig.A.Link); return }); err != nil {
		t.Fatal(err)
	}
	if err := rig.B.Do(func() (err error) { ifiB, err = net.InterfaceByName(rig.B.Link); return }); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(rig.B.Link); err == nil {
		t.Fatalf("the test's own netns has a link named %s: the daemon's lookup by name would not be shown", rig.B.Link)
	}
	out, err := exec.Command("ip", "-n", rig.B.Name, "-6", "route", "show", "table", "local").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "multicast ff00::/8 dev "+rig.B.Link) {
		t.Fatalf("B's IPv6 local table has no multicast route on %s: %v\n%s", rig.B.Link, err, out)
	}

	// A's kernel sockets, sending to the groups on A's link.
	senders := map[bool]net.PacketConn{}
	for _, v4 := range []bool{true, false} {
		var c net.PacketConn
		if err := rig.A.Do(func() (err error) {
			if v4 {
				if c, err = net.ListenPacket("udp4", "0.0.0.0:0"); err == nil {
					err = ipv4.NewPacketConn(c).SetMulticastInterface(ifiA)
				}
			} else if c, err = net.ListenPacket("udp6", "[::]:0"); err == nil {
				err = ipv6.NewPacketConn(c).SetMulticastInterface(ifiA)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		senders[v4] = c
	}
	senderOf := func(g netip.Addr) netip.AddrPort {
		if g.Is4() {
			return netip.AddrPortFrom(rig.A.IPv4, senders[true].LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
		return netip.AddrPortFrom(rig.A.IPv6, senders[false].LocalAddr().(*net.UDPAddr).AddrPort().Port())
	}
	// send sends msg from A to group g's port.
	send := func(t *testing.T, g netip.Addr, port uint16, msg string) {
		t.Helper()
		if _, err := senders[g.Is4()].WriteTo([]byte(msg), net.UDPAddrFromAddrPort(netip.AddrPortFrom(g, port))); err != nil {
			t.Fatalf("A to %v:%d: %v", g, port, err)
		}
	}
	buf := make([]byte, 65536)
	// read checks that the next datagram pc reads is msg, from the
	// sender of g when g is valid.
	read := func(t *testing.T, who string, pc net.PacketConn, msg string, g netip.Addr) {
		t.Helper()
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s: read, waiting for %.20q: %v", who, msg, err)
		}
		src := from.(*net.UDPAddr).AddrPort()
		if string(buf[:n]) != msg {
			t.Fatalf("%s read %.20q (%d bytes) from %v, want %.20q", who, buf[:n], n, src, msg)
		}
		if want := senderOf(g); g.IsValid() && (src.Addr().Unmap() != want.Addr() || src.Port() != want.Port()) {
			t.Fatalf("%s read %.20q from %v, want it from %v", who, msg, src, want)
		}
	}
	// isErr checks that err, of a join or leave, is errno; an error of
	// the library's is an *net.OpError that is the sentinel too.
	isErr := func(t *testing.T, who, what string, err error, errno syscall.Errno, sentinel error) {
		t.Helper()
		if !errors.Is(err, errno) {
			t.Errorf("%s: %s: %v, want %v", who, what, err, errno)
		}
		if _, op := err.(*net.OpError); who == "the app" && (!op || !errors.Is(err, sentinel)) {
			t.Errorf("%s: %s: %v (%T), want an *net.OpError that is %v", who, what, err, err, sentinel)
		}
	}
	udp := func(a netip.Addr) net.Addr { return &net.UDPAddr{IP: a.AsSlice()} }
	maddrs := func(t *testing.T) string {
		t.Helper()
		out, err := exec.Command("ip", "-n", rig.B.Name, "maddr", "show", "dev", rig.B.Link).CombinedOutput()
		if err != nil {
			t.Fatalf("ip maddr: %v: %s", err, out)
		}
		return string(out)
	}

	for _, c := range []struct {
		listen       string
		group, other netip.Addr
		all, unicast netip.Addr // the link's all-hosts (all-nodes) group; B's own address
	}{
		{"udp://0.0.0.0:7620", netip.MustParseAddr("239.1.2.4"), netip.MustParseAddr("239.1.2.5"),
			netip.MustParseAddr("224.0.0.1"), rig.B.IPv4},
		{"udp://[::]:7620", netip.MustParseAddr("ff0e::1:4"), netip.MustParseAddr("ff0e::1:5"),
			netip.MustParseAddr("ff02::1"), rig.B.IPv6},
	} {
		t.Run(c.group.String(), func(t *testing.T) {
			// The reference: a kernel socket on B, of another port.
			network, local := "udp6", "[::]:7621"
			if c.group.Is4() {
				network, local = "udp4", "0.0.0.0:7621"
			}
			var kc net.PacketConn
			if err := rig.B.Do(func() (err error) { kc, err = net.ListenPacket(network, local); return }); err != nil {
				t.Fatal(err)
			}
			defer kc.Close()
			var ref groupMember = ipv6.NewPacketConn(kc)
			if c.group.Is4() {
				ref = ipv4.NewPacketConn(kc)
			}
			pc, err := a.ListenPacketConn(c.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()

			for _, s := range []struct {
				who  string
				m    groupMember
				pc   net.PacketConn
				port uint16
			}{{"the reference", ref, kc, 7621}, {"the app", pc, pc, 7620}} {
				// Before the join: the group's datagram is not read.
				// The link's all-hosts group, which the interface is
				// always a member of, reaches every socket of the port
				// (as IP_MULTICAST_ALL has it), and it comes next.
				send(t, c.group, s.port, "before the join")
				send(t, c.all, s.port, "all hosts")
				read(t, s.who, s.pc, "all hosts", netip.Addr{})

				if c.group.Is4() && s.m == ref {
					// No route to the group yet.
					isErr(t, "the reference", "a join without a route to the group", ref.JoinGroup(nil, udp(c.group)), syscall.ENODEV, flow.ErrNetUnreachable)
					isErr(t, "the app", "a join without a route to the group", pc.JoinGroup(nil, udp(c.group)), syscall.ENODEV, flow.ErrNetUnreachable)
				}

				if err := s.m.JoinGroup(ifiB, udp(c.group)); err != nil {
					t.Fatalf("%s: join %v on %s: %v", s.who, c.group, ifiB.Name, err)
				}
				if !strings.Contains(maddrs(t), c.group.String()) {
					t.Fatalf("%s joined: B's link is no member of %v:\n%s", s.who, c.group, maddrs(t))
				}
				// In a frame; larger than one, in fragments.
				for _, msg := range []string{"joined", strings.Repeat("m", 3000)} {
					send(t, c.group, s.port, msg)
					read(t, s.who, s.pc, msg, c.group)
				}
				// A group not joined: not read.
				send(t, c.other, s.port, "another group")
				send(t, c.group, s.port, "after another group")
				read(t, s.who, s.pc, "after another group", c.group)

				isErr(t, s.who, "a second join", s.m.JoinGroup(ifiB, &net.IPAddr{IP: c.group.AsSlice()}), syscall.EADDRINUSE, flow.ErrAddressInUse)
				isErr(t, s.who, "a join of a unicast address", s.m.JoinGroup(ifiB, udp(c.unicast)), syscall.EINVAL, flow.ErrInvalidValue)
				isErr(t, s.who, "a leave of a group not joined", s.m.LeaveGroup(ifiB, udp(c.other)), syscall.EADDRNOTAVAIL, flow.ErrAddressNotInUse)

				if err := s.m.LeaveGroup(ifiB, udp(c.group)); err != nil {
					t.Fatalf("%s: leave %v: %v", s.who, c.group, err)
				}
				if strings.Contains(maddrs(t), c.group.String()) {
					t.Fatalf("%s left: B's link is still a member of %v:\n%s", s.who, c.group, maddrs(t))
				}
				send(t, c.group, s.port, "after the leave")
				send(t, c.all, s.port, "all hosts again")
				read(t, s.who, s.pc, "all hosts again", netip.Addr{})

				// No interface named: the route to the group picks it.
				if c.group.Is4() && s.m == ref {
					ipIn(t, rig.B, "route", "add", "224.0.0.0/4", "dev", rig.B.Link)
				}
				if err := s.m.JoinGroup(nil, udp(c.group)); err != nil {
					t.Fatalf("%s: join %v by route: %v", s.who, c.group, err)
				}
				send(t, c.group, s.port, "by route")
				read(t, s.who, s.pc, "by route", c.group)
				if err := s.m.LeaveGroup(nil, udp(c.group)); err != nil {
					t.Fatalf("%s: leave %v by route: %v", s.who, c.group, err)
				}
			}

			if err := pc.JoinGroup(&net.Interface{Name: "nosuch0"}, udp(c.group)); !errors.Is(err, flow.ErrInvalidValue) {
				t.Errorf("JoinGroup on an interface B has not: %v, want ErrInvalidValue", err)
			}
			otherFamily := netip.MustParseAddr("239.1.2.6")
			if c.group.Is4() {
				otherFamily = netip.MustParseAddr("ff0e::1:6")
			}
			if err := pc.JoinGroup(ifiB, udp(otherFamily)); !errors.Is(err, flow.ErrInvalidValue) {
				t.Errorf("JoinGroup %v on %s: %v, want ErrInvalidValue", otherFamily, c.listen, err)
			}

			// The membership goes with the listener.
			if err := pc.JoinGroup(ifiB, udp(c.other)); err != nil {
				t.Fatalf("JoinGroup %v: %v", c.other, err)
			}
			if !strings.Contains(maddrs(t), c.other.String()) {
				t.Fatalf("B's link is no member of %v:\n%s", c.other, maddrs(t))
			}
			pc.Close()
			if m := maddrs(t); strings.Contains(m, c.other.String()) {
				t.Fatalf("B's link is a member of %v after the listener closed:\n%s", c.other, m)
			}
			if err := pc.JoinGroup(ifiB, udp(c.group)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("JoinGroup after Close: %v, want net.ErrClosed", err)
			}
		})
	}

	// A listener of both families joins on the bind of each group's.
	pc, err := a.ListenPacketConn("udp://:7622")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, g := range []netip.Addr{netip.MustParseAddr("239.1.2.7"), netip.MustParseAddr("ff0e::1:7")} {
		if err := pc.JoinGroup(ifiB, udp(g)); err != nil {
			t.Fatalf("both families: JoinGroup %v: %v", g, err)
		}
		send(t, g, 7622, "both families")
		read(t, "both families", pc, "both families", g)
	}

	s := d.EngineStats()
	t.Logf("xdp redirect %d, not_local %d; kernel_rx %d", s.XDP["redirect"], s.XDP["not_local"], s.KernelRx)
	// Every datagram of the test was to a group: none was steered.
	if s.XDP["redirect"] != 0 || s.XDP["not_local"] == 0 || s.KernelRx == 0 {
		t.Errorf("xdp redirect %d, not_local %d; kernel_rx %d: want the groups' datagrams passed to the kernel and read from it",
			s.XDP["redirect"], s.XDP["not_local"], s.KernelRx)
	}
	if drops := s.Totals.Drops; len(drops) > 0 {
		t.Errorf("drops %v", drops)
	}

	// A daemon without a datapath has no kernel socket to join with.
	a0 := attach(t, startDaemon(t), app.Options{Name: "multicast-none"})
	pc0, err := a0.ListenPacketConn("udp://0.0.0.0:7623")
	if err != nil {
		t.Fatal(err)
	}
	defer pc0.Close()
	if err := pc0.JoinGroup(nil, udp(netip.MustParseAddr("239.1.2.8"))); !errors.Is(err, flow.ErrNotSupported) {
		t.Errorf("JoinGroup without a datapath: %v, want ErrNotSupported", err)
	}
}
