package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPDialCancelledBesideOtherApp: one app dials a kernel server with
// deadlines that run out while its connects are under way (before, during
// and after the handshake), while another app dials the same server and
// exchanges data. The second app's connects all succeed and carry their
// bytes, whatever the first's cancelled connects do (their half-open
// sessions end while the datapath still works on them); and once both are
// done no session, connection or fifo byte is left: a connect that
// completed as its dial gave up is closed, not kept.
func TestTCPDialCancelledBesideOtherApp(t *testing.T) {
	// The daemon's reasons for the connects that failed, for a failure
	// to show: the app sees only the wire's code.
	var failed linesWith
	failed.substr = "tcp: connect failed"
	rig, d := tcpRig(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&failed, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	kl := kernelListen(t, rig.A, ":7300")
	go echoServe(kl)
	quitter := attach(t, d, app.Options{Name: "quitter"})
	steady := attach(t, d, app.Options{Name: "steady"})
	dst := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7300).String()
	// The first connect waits for the neighbour: out of the way first.
	connect := medianDial(t, steady, dst)

	const quits, exchanges = 600, 150
	var wg sync.WaitGroup
	var cancelled, completed int
	var quitErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		cancelled, completed, quitErr = dialsCutShort(quitter, dst, quits, connect)
	}()
	msg := []byte("steady as she goes")
	for i := range exchanges {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := steady.Dial(ctx, dst)
		cancel()
		if err != nil {
			t.Fatalf("steady's dial %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("steady's write %d: %v", i, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("steady's exchange %d: %q, %v", i, buf, err)
		}
		c.Close()
	}
	wg.Wait()
	if quitErr != nil {
		t.Fatalf("quitter: %v; the daemon's failed connects:\n%s", quitErr, failed.String())
	}
	t.Logf("quitter: %d dials cancelled, %d completed", cancelled, completed)
	if cancelled == 0 {
		t.Errorf("no dial was cancelled: the deadlines did not test what they should")
	}
	eng := d.Engine()
	deadline := time.Now().Add(15 * time.Second)
	for len(d.layer.Sessions()) != 0 || eng.TCPStats().Conns != 0 {
		if time.Now().After(deadline) {
			for _, s := range d.layer.Sessions() {
				t.Logf("left: %+v", s)
			}
			t.Fatalf("sessions and connections left: tcp %+v", eng.TCPStats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, ai := range d.layer.Apps() {
		if ai.Sessions != 0 || ai.Ended != 0 {
			t.Errorf("app %d (%s) still has %d sessions and %d ended", ai.ID, ai.Name, ai.Sessions, ai.Ended)
		}
	}
}

// linesWith keeps the log records written to it that contain substr.
type linesWith struct {
	substr string
	mu     sync.Mutex
	buf    strings.Builder
}

func (l *linesWith) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(l.substr)) {
		l.mu.Lock()
		l.buf.Write(p)
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *linesWith) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestCutThroughDialCancelled: dials to another app's listener on the host
// (cut-through sessions, made by the Connect reply itself) with deadlines
// around a dial's time. A session made as its dial gave up is closed by the
// dialing app: the listening app sees each one it accepted end, and none is
// left.
func TestCutThroughDialCancelled(t *testing.T) {
	d, cli, ln := streamCutThroughApps(t)
	var served sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Add(1)
			go func() {
				defer served.Done()
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Errorf("accepted session did not end: %v", err)
				}
			}()
		}
	}()
	dial := medianDial(t, cli, "tcp://127.0.0.1:7000")
	cancelled, completed, err := dialsCutShort(cli, "tcp://127.0.0.1:7000", 600, dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d dials cancelled, %d completed", cancelled, completed)
	deadline := time.Now().Add(10 * time.Second)
	for len(d.layer.Sessions()) != 0 {
		if time.Now().After(deadline) {
			for _, s := range d.layer.Sessions() {
				t.Logf("left: %+v", s)
			}
			t.Fatalf("%d sessions left", len(d.layer.Sessions()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	ln.Close()
	served.Wait()
}

// medianDial dials uri from a twenty times, closing each session, and
// returns the median time a dial took.
func medianDial(t *testing.T, a *app.App, uri string) time.Duration {
	t.Helper()
	var took []time.Duration
	for range 20 {
		start := time.Now()
		c, err := a.Dial(t.Context(), uri)
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		c.Close()
	}
	slices.Sort(took)
	t.Logf("a dial to %s takes %v (median of 20)", uri, took[len(took)/2])
	return took[len(took)/2]
}

// dialsCutShort makes n dials to uri from a with deadlines from 20 µs to
// twice typical, closing those that complete; any error other than the
// deadline's ends it.
func dialsCutShort(a *app.App, uri string, n int, typical time.Duration) (cancelled, completed int, err error) {
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Microsecond+time.Duration(i%100)*typical/50)
		c, err := a.Dial(ctx, uri)
		cancel()
		switch {
		case err == nil:
			completed++
			c.Close()
		case errors.Is(err, context.DeadlineExceeded):
			cancelled++
		default:
			return cancelled, completed, fmt.Errorf("dial %d: %w", i, err)
		}
	}
	return cancelled, completed, nil
}
