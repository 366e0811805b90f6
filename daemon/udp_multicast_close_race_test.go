package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestUDPMulticastJoinMeetsClose: a JoinGroup or LeaveGroup that runs
// into the listener's Close fails with net.ErrClosed, as a kernel
// socket's setsockopt after close fails with EBADF that the net package
// reports as net.ErrClosed, not with the daemon's refusal of the handle
// Close unbound.
func TestUDPMulticastJoinMeetsClose(t *testing.T) {
	m := newMcastRig(t)
	a := attach(t, m.d, app.Options{Name: "joiner"})
	for round := 0; round < 200; round++ {
		pc, err := a.ListenPacketConn("udp://0.0.0.0:7680")
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				g := &net.UDPAddr{IP: netip.AddrFrom4([4]byte{239, 4, byte(round), byte(i / 2 % 200)}).AsSlice()} // joined, then left
				var err error
				if i%2 == 0 {
					err = pc.JoinGroup(nil, g)
				} else {
					err = pc.LeaveGroup(nil, g)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		time.Sleep(time.Duration(round%40) * 50 * time.Microsecond)
		if err := pc.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("round %d: a membership change meeting Close: %v (%s), want net.ErrClosed", round, err, fmt.Sprintf("%T", errors.Unwrap(err)))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: membership changes went on after Close", round)
		}
	}
}
