package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestConnectRefusedWhenSessionMapFull: once the XDP program's
// established map is full, a UDP connect fails with a limit error that
// says so and leaves no session behind, and a TCP connect fails with it
// at once, rather than answer for a session the program never steers (a
// UDP session's datagrams went to the kernel, a TCP connect's SYN-ACK
// drew the kernel's reset and the connect ran into its timeout); one
// session closed, a connect works again, UDP and TCP.
func TestConnectRefusedWhenSessionMapFull(t *testing.T) {
	const room = 4
	rig, d := tcpRig(t, func(c *Config) { c.Datapath.MaxEstablished = room })
	ln := kernelListen(t, rig.A, fmt.Sprintf("%s:7300", rig.A.IPv4))
	go serveEach(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	a := attach(t, d, app.Options{Name: "many"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []net.Conn
	var err error
	for range room + 1 {
		var c net.Conn
		if c, err = a.Dial(ctx, fmt.Sprintf("udp://%s:%d", rig.A.IPv4, 7400+len(conns))); err != nil {
			break
		}
		conns = append(conns, c)
	}
	if len(conns) != room || !errors.Is(err, flow.ErrLimit) || !strings.Contains(err.Error(), "session table is full") {
		t.Fatalf("%d UDP connects, then %v; want %d, then a limit error saying the session table is full", len(conns), err, room)
	}
	// sessionsSettle reports the app's sessions once their count is room
	// (a refused one goes as its worker runs what the close posted), or
	// after a second.
	sessionsSettle := func() int {
		n := 0
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n = len(d.layer.Sessions()); n == room {
				break
			}
		}
		return n
	}
	if n := sessionsSettle(); n != room {
		t.Fatalf("%d sessions after the refused UDP connect, want %d: the refused one stayed", n, room)
	}
	start := time.Now()
	_, err = a.Dial(ctx, fmt.Sprintf("tcp://%s:7300", rig.A.IPv4))
	if !errors.Is(err, flow.ErrLimit) {
		t.Fatalf("a TCP connect with the map full: %v after %v, want a limit error", err, time.Since(start))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the TCP connect failed after %v", took)
	}
	if n := sessionsSettle(); n != room {
		t.Fatalf("%d sessions after the refused TCP connect, want %d: the refused one stayed", n, room)
	}
	if err := conns[0].Close(); err != nil {
		t.Fatal(err)
	}
	c, err := a.Dial(ctx, fmt.Sprintf("tcp://%s:7300", rig.A.IPv4))
	if err != nil {
		t.Fatalf("a TCP connect once a session closed: %v", err)
	}
	msg := []byte("steered")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("echo over the TCP connection: %q %v", buf, err)
	}
	c.Close()
}
