package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// mcastRig is a rig with the daemon on host B, B's link and A's as Go
// interfaces, a route for the IPv4 groups on B, and a kernel UDP socket
// on A that sends to groups on A's link.
type mcastRig struct {
	rig        *nstest.Pair
	d          *Daemon
	ifiA, ifiB *net.Interface
	sender     net.PacketConn
}

func newMcastRig(t *testing.T) *mcastRig {
	t.Helper()
	m := &mcastRig{rig: nstest.NewPair(t, nstest.Options{})}
	m.d = startDaemon(t, onB(m.rig))
	if err := m.rig.A.Do(func() (err error) { m.ifiA, err = net.InterfaceByName(m.rig.A.Link); return }); err != nil {
		t.Fatal(err)
	}
	if err := m.rig.B.Do(func() (err error) { m.ifiB, err = net.InterfaceByName(m.rig.B.Link); return }); err != nil {
		t.Fatal(err)
	}
	ipIn(t, m.rig.B, "route", "add", "224.0.0.0/4", "dev", m.rig.B.Link)
	if err := m.rig.A.Do(func() (err error) {
		if m.sender, err = net.ListenPacket("udp4", "0.0.0.0:0"); err == nil {
			err = ipv4.NewPacketConn(m.sender).SetMulticastInterface(m.ifiA)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.sender.Close() })
	return m
}

// send sends msg from A's kernel socket to g.
func (m *mcastRig) send(t *testing.T, g netip.AddrPort, msg string) {
	t.Helper()
	if _, err := m.sender.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(g)); err != nil {
		t.Fatalf("A to %v: %v", g, err)
	}
}

// from is the address A's datagrams come from.
func (m *mcastRig) from() netip.AddrPort {
	return netip.AddrPortFrom(m.rig.A.IPv4, m.sender.LocalAddr().(*net.UDPAddr).AddrPort().Port())
}

// expect checks that pc's next datagram, within a second, is msg from A.
func (m *mcastRig) expect(t *testing.T, who string, pc net.PacketConn, msg string) {
	t.Helper()
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("%s: read, waiting for %q: %v", who, msg, err)
	}
	if got := from.(*net.UDPAddr).AddrPort(); string(buf[:n]) != msg || got.Addr().Unmap() != m.from().Addr() || got.Port() != m.from().Port() {
		t.Fatalf("%s read %q from %v, want %q from %v", who, buf[:n], got, msg, m.from())
	}
}

// maddrs is B's link's multicast memberships (ip maddr).
func (m *mcastRig) maddrs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", m.rig.B.Name, "maddr", "show", "dev", m.rig.B.Link).CombinedOutput()
	if err != nil {
		t.Fatalf("ip maddr: %v: %s", err, out)
	}
	return string(out)
}

// TestUDPMulticastWildcardHeirJoins: a wildcard listener bound beside
// another app's listener of a specific address of its port takes the
// port over, with a kernel socket of its own, when that one closes; from
// then on it joins a group and receives the group's datagrams from A's
// kernel as a kernel socket bound to the wildcard address does (the
// reference, on another port of B), and the membership goes with it.
func TestUDPMulticastWildcardHeirJoins(t *testing.T) {
	const port = 7660
	m := newMcastRig(t)
	g := netip.MustParseAddr("239.1.2.60")

	// The reference: B's kernel socket of the wildcard address.
	kc := kernelUDP4(t, m.rig.B, 7661)
	if err := ipv4.NewPacketConn(kc).JoinGroup(m.ifiB, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
		t.Fatalf("the reference: join %v: %v", g, err)
	}
	m.send(t, netip.AddrPortFrom(g, 7661), "reference")
	m.expect(t, "the reference", kc, "reference")
	if err := ipv4.NewPacketConn(kc).LeaveGroup(m.ifiB, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
		t.Fatalf("the reference: leave %v: %v", g, err)
	}

	sa := attach(t, m.d, app.Options{Name: "specific"})
	spec, err := sa.ListenPacketConn("udp://" + netip.AddrPortFrom(m.rig.B.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	wa := attach(t, m.d, app.Options{Name: "wildcard"})
	wild, err := wa.ListenPacketConn("udp://0.0.0.0:7660")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	spec.Close()

	if err := wild.JoinGroup(m.ifiB, &net.UDPAddr{IP: g.AsSlice()}); err != nil {
		t.Fatalf("the wildcard listener, its port its own now: join %v: %v", g, err)
	}
	if !strings.Contains(m.maddrs(t), g.String()) {
		t.Fatalf("B's link is no member of %v:\n%s", g, m.maddrs(t))
	}
	m.send(t, netip.AddrPortFrom(g, port), "to the heir")
	m.expect(t, "the wildcard listener", wild, "to the heir")
	wild.Close()
	if s := m.maddrs(t); strings.Contains(s, g.String()) {
		t.Fatalf("B's link is a member of %v after the listener closed:\n%s", g, s)
	}
}

// mcastChildApp is an app whose listeners of both families joined a group
// each on the interface iface (of the daemon's netns). It says "joined"
// and waits to be killed.
func mcastChildApp(sock, iface string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "mcastchild"})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	pc, err := a.ListenPacketConn("udp://:7665")
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	for _, g := range []string{"239.1.2.65", "ff0e::1:65"} {
		if err := pc.JoinGroup(&net.Interface{Name: iface}, &net.UDPAddr{IP: net.ParseIP(g)}); err != nil {
			fmt.Println("join:", err)
			return 1
		}
	}
	fmt.Println("joined")
	select {}
}

// TestUDPMulticastAppDeath: the groups an app's listeners joined are left
// when the app is killed, as a killed process's kernel sockets leave
// theirs, and its port is free again.
func TestUDPMulticastAppDeath(t *testing.T) {
	m := newMcastRig(t)
	groups := []string{"239.1.2.65", "ff0e::1:65"}
	// The child app: its argument is the interface to join on.
	ch := startChildApp(t, "mcast", m.d.Socket(), m.rig.B.Link)
	cmd := ch.cmd
	ch.expect(t, "joined")
	for _, g := range groups {
		if !strings.Contains(m.maddrs(t), g) {
			t.Fatalf("B's link is no member of %s with the child alive:\n%s", g, m.maddrs(t))
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	waitFor(t, "the child's memberships to end", 5*time.Second, func() bool {
		s := m.maddrs(t)
		return !strings.Contains(s, groups[0]) && !strings.Contains(s, groups[1])
	})
	for _, network := range []string{"udp4", "udp6"} {
		if err := m.rig.B.Do(func() error {
			c, err := net.ListenPacket(network, ":7665")
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Errorf("a kernel bind of %s :7665 in B after the app died: %v", network, err)
		}
	}
}

// TestUDPMulticastMembershipBound: a listener's socket is a member of at
// most net.ipv4.igmp_max_memberships groups (of its netns) in either
// family: past that, a join fails with ENOBUFS, as a kernel IPv4
// socket's does (the reference, on B with the bound lowered to 5). Linux
// bounds an IPv6 socket's memberships only by its option memory
// (net.core.optmem_max, thousands), so without this an app could make
// the daemon's interface join thousands of groups per listener. A leave
// makes room again, and another app's listener joins as before.
func TestUDPMulticastMembershipBound(t *testing.T) {
	const bound = 5
	m := newMcastRig(t)
	const sysctl = "/proc/sys/net/ipv4/igmp_max_memberships"
	if err := m.rig.B.Do(func() error { return os.WriteFile(sysctl, []byte(fmt.Sprint(bound)), 0) }); err != nil {
		t.Fatal(err)
	}
	groupOf := func(v4 bool, i int) net.Addr {
		if v4 {
			return &net.UDPAddr{IP: netip.AddrFrom4([4]byte{239, 3, 0, byte(i)}).AsSlice()}
		}
		return &net.UDPAddr{IP: netip.MustParseAddr(fmt.Sprintf("ff0e::3:%x", i)).AsSlice()}
	}
	// joins joins groups 1, 2, ... until a join fails (at most 100) and
	// returns how many it joined and the failure.
	joins := func(m groupMember, v4 bool) (int, error) {
		for i := 1; i <= 100; i++ {
			if err := m.JoinGroup(nil, groupOf(v4, i)); err != nil {
				return i - 1, err
			}
		}
		return 100, nil
	}

	// The reference: B's kernel IPv4 socket.
	kc := kernelUDP4(t, m.rig.B, 7671)
	if n, err := joins(ipv4.NewPacketConn(kc), true); n != bound || !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("the reference: a kernel IPv4 socket joined %d groups, then %v; want %d, then ENOBUFS", n, err, bound)
	}

	a := attach(t, m.d, app.Options{Name: "joiner"})
	pc, err := a.ListenPacketConn("udp://:7670")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, v4 := range []bool{true, false} {
		n, err := joins(pc, v4)
		if n != bound || !errors.Is(err, syscall.ENOBUFS) || !errors.Is(err, flow.ErrLimit) {
			t.Errorf("the app's listener (IPv4 %v) joined %d groups, then %v; want %d, then ENOBUFS and ErrLimit", v4, n, err, bound)
			continue
		}
		if err := pc.LeaveGroup(nil, groupOf(v4, 1)); err != nil {
			t.Fatalf("leave: %v", err)
		}
		if err := pc.JoinGroup(nil, groupOf(v4, 50)); err != nil {
			t.Errorf("a join after a leave (IPv4 %v): %v", v4, err)
		}
	}

	other, err := attach(t, m.d, app.Options{Name: "other"}).ListenPacketConn("udp://[::]:7672")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.JoinGroup(nil, groupOf(false, 1)); err != nil {
		t.Errorf("another app's listener: join: %v", err)
	}
}
