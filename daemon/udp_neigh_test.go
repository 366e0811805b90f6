package daemon

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestUDPListenerBesideUnansweredHops: a UDP listener's replies to peers
// whose addresses nobody answers ARP for (datagrams with spoofed sources
// of A's subnet, sent through transparent sockets of host A) hold up no
// reply to a peer that answers: past the listener's share of the hold
// slots, the datagrams to next hops the kernel is still probing are
// dropped and the others go on (121 ms seen). A kernel server beside it
// on B stalls for seconds, its socket's send buffer full of datagrams
// queued on the unanswered neighbour entries (3 s, and past the 5 s an
// echo is waited for, seen): logged, not asked. Before, the app's replies
// waited in its fifo behind the held ones, a second per 64: its peer's
// echo took 6.0 s.
func TestUDPListenerBesideUnansweredHops(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "echo"})
	pc, err := a.ListenPacket("udp://0.0.0.0:9300")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPackets(pc)
	// A kernel server beside it on B, the same way.
	ks, err := rig.B.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), 9301), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	go echoUDP(ks)
	for i, port := range []uint16{9301, 9300} {
		worst := spoofedBeside(t, rig, netip.AddrPortFrom(rig.B.IPv4, port), byte(100+50*i))
		who := []string{"a kernel server", "the app"}[i]
		t.Logf("%s: the slowest echo to the answering peer after the spoofed datagrams: %v", who, worst)
		if i == 1 && worst > 500*time.Millisecond {
			t.Errorf("an echo to the answering peer took %v: replies to unanswered next hops held it up", worst)
		}
	}
}

// spoofedBeside sends 400 datagrams to dst from 50 addresses of A's
// subnet that nobody owns (base to base+49), then echoes from a real
// socket of host A for two seconds, and returns the slowest echo.
func spoofedBeside(t *testing.T, rig *nstest.Pair, dst netip.AddrPort, base byte) time.Duration {
	t.Helper()
	client := kernelClient(t, rig.A)
	echo := func() time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := client.WriteToUDPAddrPort([]byte("ping"), dst); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(start.Add(5 * time.Second))
		if _, _, err := client.ReadFromUDPAddrPort(make([]byte, 64)); err != nil {
			// Reported as the wait it was: the kernel server's writes
			// wait for the unanswered neighbours' queues to go.
			t.Logf("echo from %v to the answering peer: %v", dst, err)
		}
		return time.Since(start)
	}
	echo()
	err := rig.A.Do(func() error {
		// Transparent sockets send from addresses the host does not have.
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		for i := range 50 {
			b := rig.A.IPv4.As4()
			b[3] = base + byte(i)
			c, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(netip.AddrFrom4(b).String(), "9400"))
			if err != nil {
				return err
			}
			for range 8 {
				if _, err := c.WriteTo([]byte("spoofed"), net.UDPAddrFromAddrPort(dst)); err != nil {
					c.Close()
					return err
				}
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		worst = max(worst, echo())
	}
	return worst
}
