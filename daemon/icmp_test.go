package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestDialRefusedStaysOpen: a connected UDP session to a port of host A
// nobody has gets ECONNREFUSED on its next read (a blocked Read wakes
// with it) and the session stays usable: the error is reported once, and
// after a kernel socket opens the port a datagram goes through and its
// answer comes back.
func TestDialRefusedStaysOpen(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "refused"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7009", rig.A.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	var rerr error
	for try := 0; try < 3; try++ { // the first may wait for ARP
		if _, err := c.Write([]byte("anyone?")); err != nil {
			rerr = err
			break
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, rerr = c.Read(buf)
		var ne net.Error
		if !(errors.As(rerr, &ne) && ne.Timeout()) {
			break
		}
	}
	if !errors.Is(rerr, syscall.ECONNREFUSED) {
		t.Fatalf("read after a datagram to a closed port: %v, want ECONNREFUSED", rerr)
	}
	// Reported once: the next read times out.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second read: %v, want a timeout", err)
	}
	srv, err := bindKernel(rig.A, "0.0.0.0:7009")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := c.Write([]byte("now?")); err != nil {
		t.Fatalf("write after the error: %v", err)
	}
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "now?" {
		t.Fatalf("server: %q %v", buf[:n], err)
	}
	if _, err := srv.WriteTo([]byte("yes"), from); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "yes" {
		t.Fatalf("answer: %q %v", buf[:n], err)
	}
}
