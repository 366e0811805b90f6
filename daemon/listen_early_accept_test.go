package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

// TestConnectionsBeforeListenReturns: the daemon hands a listener its
// sessions from its bind on, and a client that dials in a loop while the
// server starts (a restart) may connect before the server's Listen has
// returned. Such a connection waits for the listener, as a kernel
// listener's from listen(2) on: a local app's cut-through connect and a
// kernel client's over the wire each echo once Listen returns and the
// server accepts. Before, the app library refused both (their Accepted
// came before it had registered the listener): the dialers read a reset.
func TestConnectionsBeforeListenReturns(t *testing.T) {
	rig, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli"})
	testhook.ListenRegisterPause.Store(int64(500 * time.Millisecond))
	t.Cleanup(func() { testhook.ListenRegisterPause.Store(0) })
	lnc := make(chan net.Listener, 1)
	go func() {
		ln, err := srv.Listen("tcp://0.0.0.0:7810")
		if err != nil {
			t.Errorf("listen: %v", err)
		}
		lnc <- ln
	}()
	// Dial until the bind is in place, both ways, within the pause.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var local, wire net.Conn
	for local == nil || wire == nil {
		if ctx.Err() != nil {
			t.Fatalf("no connection while Listen was under way (local %v, wire %v)", local != nil, wire != nil)
		}
		if local == nil {
			local, _ = cli.Dial(ctx, "tcp://127.0.0.1:7810")
		}
		if wire == nil {
			_ = rig.A.Do(func() (err error) {
				wire, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7810).String(), 200*time.Millisecond)
				return err
			})
		}
		if local == nil || wire == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	defer local.Close()
	defer wire.Close()
	ln := <-lnc
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	go serveEach(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	for name, c := range map[string]net.Conn{"cut-through": local, "wire": wire} {
		msg := []byte(fmt.Sprintf("dialled %s before Listen returned", name))
		if _, err := c.Write(msg); err != nil {
			t.Errorf("%s: write: %v", name, err)
			continue
		}
		buf := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
			t.Errorf("%s: echo %q: %v", name, buf, err)
		}
	}
}
