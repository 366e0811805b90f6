package daemon

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPDaemonStopResetsPeers: a daemon that stops ends its TCP
// connections with a reset, so that a kernel peer waiting to read learns
// at once that the connection is gone, as when a kernel drops a
// connection's state. Before, the resets its stack queued as it closed
// were discarded with the stopped workers' queues, and the peer waited
// for as long as it was willing to.
func TestTCPDaemonStopResetsPeers(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "silent"})
	const port = 7380
	ln := listenApp(t, a, "tcp://0.0.0.0:"+strconv.Itoa(port))
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, silent
		}
	}()
	c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted")
	}
	stopped := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the peer's read after the daemon stopped: %d bytes, %v after %v; want ECONNRESET", n, err, time.Since(stopped))
	}
	t.Logf("the peer's read: %v, %v after the daemon's Close began", err, time.Since(stopped))
}
