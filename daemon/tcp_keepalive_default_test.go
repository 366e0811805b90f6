package daemon

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPKeepaliveSettersMatchKernel: the keepalive setters of an app's
// wire connection do what net.TCPConn's do to a kernel socket, seen as the
// probes that reach host A while the connection is idle. A connection
// starts with keepalive on (net.Dial turns it on), so SetKeepAlivePeriod
// alone makes probes come after that idle time; SetKeepAlivePeriod sets the
// idle time and leaves keepalive off when it was turned off;
// SetKeepAlive(true) turns it on again with the idle time set before.
func TestTCPKeepaliveSettersMatchKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "keepalive"})
	const port = 7410
	kl := kernelListen(t, rig.A, netip.AddrPortFrom(rig.A.IPv4, port).String())
	go serveEach(kl, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	dst := netip.AddrPortFrom(rig.A.IPv4, port).String()
	conns := map[string]net.Conn{"app": dialApp(t, a, "tcp://"+dst)}
	if err := rig.B.Do(func() error {
		c, err := net.Dial("tcp", dst)
		conns["kernel"] = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conns["kernel"].Close()

	// Host A's view: the segments from each of B's ports to A's.
	seen := newSegmentCounter(t, rig.A, port)
	type keepaliver interface {
		SetKeepAlive(bool) error
		SetKeepAlivePeriod(time.Duration) error
	}
	steps := []struct {
		name   string
		do     func(c keepaliver) error
		probes bool
	}{
		{"SetKeepAlivePeriod(1s) on a new connection", func(c keepaliver) error { return c.SetKeepAlivePeriod(time.Second) }, true},
		{"SetKeepAlive(false), then SetKeepAlivePeriod(1s)", func(c keepaliver) error {
			if err := c.SetKeepAlive(false); err != nil {
				return err
			}
			return c.SetKeepAlivePeriod(time.Second)
		}, false},
		{"SetKeepAlive(true)", func(c keepaliver) error { return c.SetKeepAlive(true) }, true},
	}
	for _, s := range steps {
		for name, c := range conns {
			if err := s.do(c.(keepaliver)); err != nil {
				t.Fatalf("%s: %s: %v", s.name, name, err)
			}
		}
		seen.reset()
		time.Sleep(2500 * time.Millisecond) // over twice the idle time
		for name, c := range conns {
			lp := uint16(c.LocalAddr().(*net.TCPAddr).Port)
			if n := seen.count(lp); (n > 0) != s.probes {
				t.Errorf("%s: %s connection: %d segments reached host A in 2.5 s of idle; want probes: %v", s.name, name, n, s.probes)
			}
		}
	}
}

// segmentCounter counts the TCP segments host A receives on its link for
// port, by their source port.
type segmentCounter struct {
	mu sync.Mutex
	n  map[uint16]int
}

func newSegmentCounter(t *testing.T, h *nstest.Host, port uint16) *segmentCounter {
	var fd int
	if err := h.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: h.IfIndex, Protocol: htons(unix.ETH_P_IP)})
	}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		t.Fatal(err)
	}
	sc := &segmentCounter{n: map[uint16]int{}}
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped; unix.Close(fd) })
	go func() {
		defer close(stopped)
		buf := make([]byte, 2048)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			ip := buf[:n]
			if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP {
				continue
			}
			l4 := ip[int(ip[0]&0x0f)*4:]
			if len(l4) < 4 || binary.BigEndian.Uint16(l4[2:4]) != port {
				continue
			}
			sc.mu.Lock()
			sc.n[binary.BigEndian.Uint16(l4[0:2])]++
			sc.mu.Unlock()
		}
	}()
	return sc
}

func (sc *segmentCounter) reset() {
	sc.mu.Lock()
	clear(sc.n)
	sc.mu.Unlock()
}

func (sc *segmentCounter) count(src uint16) int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.n[src]
}
