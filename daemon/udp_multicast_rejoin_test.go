package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"golang.org/x/net/ipv4"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestUDPMulticastRejoinAtBound: a join of a group the listener is a
// member of already, made when its memberships are at the bound, fails
// with EADDRINUSE in either family, as a kernel IPv4 socket's (Linux
// looks for the membership before it checks the bound), not ENOBUFS.
func TestUDPMulticastRejoinAtBound(t *testing.T) {
	const bound = 3
	m := newMcastRig(t)
	const sysctl = "/proc/sys/net/ipv4/igmp_max_memberships"
	if err := m.rig.B.Do(func() error { return os.WriteFile(sysctl, []byte(fmt.Sprint(bound)), 0) }); err != nil {
		t.Fatal(err)
	}
	groupOf := func(v4 bool, i int) net.Addr {
		if v4 {
			return &net.UDPAddr{IP: netip.AddrFrom4([4]byte{239, 5, 0, byte(i)}).AsSlice()}
		}
		return &net.UDPAddr{IP: netip.MustParseAddr(fmt.Sprintf("ff0e::5:%x", i)).AsSlice()}
	}
	fill := func(g groupMember, v4 bool) error {
		for i := 1; i <= bound; i++ {
			if err := g.JoinGroup(nil, groupOf(v4, i)); err != nil {
				return err
			}
		}
		return nil
	}

	kc := kernelUDP4(t, m.rig.B, 7691)
	kp := ipv4.NewPacketConn(kc)
	if err := fill(kp, true); err != nil {
		t.Fatal(err)
	}
	if err := kp.JoinGroup(nil, groupOf(true, 1)); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("the reference: a kernel IPv4 socket at the bound joining a group again: %v, want EADDRINUSE", err)
	}

	a := attach(t, m.d, app.Options{Name: "rejoin"})
	pc, err := a.ListenPacketConn("udp://:7690")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, v4 := range []bool{true, false} {
		if err := fill(pc, v4); err != nil {
			t.Fatalf("IPv4 %v: %v", v4, err)
		}
		err := pc.JoinGroup(nil, groupOf(v4, 2))
		if !errors.Is(err, syscall.EADDRINUSE) || !errors.Is(err, flow.ErrAddressInUse) {
			t.Errorf("IPv4 %v: a join again at the bound: %v, want EADDRINUSE", v4, err)
		}
		if err := pc.JoinGroup(nil, groupOf(v4, bound+1)); !errors.Is(err, syscall.ENOBUFS) {
			t.Errorf("IPv4 %v: a new group at the bound: %v, want ENOBUFS", v4, err)
		}
		// A leave and a join again: under the bound once more.
		if err := pc.LeaveGroup(nil, groupOf(v4, 2)); err != nil {
			t.Fatal(err)
		}
		if err := pc.JoinGroup(nil, groupOf(v4, 2)); err != nil {
			t.Errorf("IPv4 %v: a join after a leave: %v", v4, err)
		}
	}
}
