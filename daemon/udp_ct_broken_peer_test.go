package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestUDPListenerLetsGoOfCorruptPeer: a cut-through peer whose fifo is
// found corrupt is ended by the listener (BrokenPeers) while its app keeps
// its own end of the session open, as a hostile app would. The listener
// is not left with that end: a read with nothing else to read sleeps
// until its deadline instead of spinning on the broken fifo's bytes, and
// the listener unmaps the session's segment once the daemon ended the
// session, although no event tells it so (the daemon tells the other end
// alone of a Disconnect). Before, every such read spun on the CPU until
// its deadline, and the listener held the segment (and the peer's
// eventfd) until it closed.
func TestUDPListenerLetsGoOfCorruptPeer(t *testing.T) {
	if raceEnabled {
		// As TestUDPListenerOutlivesCorruptPeer: the test writes the
		// session's segment through the daemon's mapping, which the
		// daemon closes when the session ends.
		t.Skip("writes the daemon's mapping of a segment the daemon later closes")
	}
	// What earlier tests of the process still map (their apps' ends let
	// go off their goroutines) is not this test's.
	before := leakcheck.Mappings(t, "memfd:xsessiond:ct-")
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "listener"})
	pc, err := srv.ListenPacketConn("udp://0.0.0.0:7932")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hostile := attach(t, d, app.Options{Name: "hostile"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc, err := hostile.Dial(ctx, "udp://127.0.0.1:7932")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close() // its app keeps the session's end until the test ends
	buf := make([]byte, 2048)
	if _, err := hc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("first datagram: %q %v", buf[:n], err)
	}
	breakQueuedDgram(t, d, "hostile", hc)
	sleeps := srv.ReadStats().Sleeps
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with the broken peer alone: %d from %v, %v; want a timeout", n, from, err)
	}
	if pc.BrokenPeers() != 1 {
		t.Fatalf("BrokenPeers %d, want 1", pc.BrokenPeers())
	}
	if srv.ReadStats().Sleeps == sleeps {
		t.Errorf("the read never slept: it spun until its deadline on the broken session's queued bytes")
	}
	waitFor(t, "the broken session to end in the daemon", 5*time.Second, func() bool {
		return len(appSessions(t, d, "hostile")) == 0
	})
	// The daemon let go of the segment; the hostile app maps it still.
	// Reads go on, and one after the session ended drops the listener's
	// end with its mapping.
	deadline := time.Now().Add(5 * time.Second)
	for leakcheck.Mappings(t, "memfd:xsessiond:ct-") > before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("the listener still maps the broken session's segment (%d mappings, %d before the test; want the hostile app's alone)", leakcheck.Mappings(t, "memfd:xsessiond:ct-"), before)
		}
		pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		pc.ReadFrom(buf)
	}
}

// TestUDPListenerWritesOnPastCorruptPeer: a cut-through peer that breaks
// the fifo the listener writes its datagrams into (its own rx fifo, whose
// head it owns) costs the listener that session alone: WriteTo to it
// loses the datagram without an error, as one to a peer gone, the session
// is ended (BrokenPeers), and the listener's writes to another peer go on.
// Before, every WriteTo to it failed with "fifo: corrupt shared state",
// which ends a server loop that treats write errors as fatal.
func TestUDPListenerWritesOnPastCorruptPeer(t *testing.T) {
	if raceEnabled {
		t.Skip("writes the daemon's mapping of a segment the daemon later closes")
	}
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "listener"})
	pc, err := srv.ListenPacketConn("udp://0.0.0.0:7933")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, 2048)
	peer := func(name string) (net.Conn, net.Addr) {
		a := attach(t, d, app.Options{Name: name})
		c, err := a.Dial(ctx, "udp://127.0.0.1:7933")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != name {
			t.Fatalf("%s's datagram: %q %v", name, buf[:n], err)
		}
		return c, from
	}
	hc, hostileAddr := peer("hostile")
	defer hc.Close()
	gc, goodAddr := peer("good")
	defer gc.Close()
	for _, p := range appSessions(t, d, "hostile") { // the one: its rx fifo is the listener's tx
		fifotest.SetHead(p.Rx, fifotest.Tail(p.Rx)+1<<30)
	}
	// The writer finds the head broken once the room it knew of is used
	// up: 200 datagrams of 1 KiB are three times the fifo.
	big := make([]byte, 1024)
	for i := range 200 {
		if n, err := pc.WriteTo(big, hostileAddr); err != nil || n != len(big) {
			t.Fatalf("WriteTo %d to the peer that broke its fifo: %d, %v; want the datagram taken (and lost)", i, n, err)
		}
	}
	if n := pc.BrokenPeers(); n != 1 {
		t.Fatalf("BrokenPeers %d, want 1", n)
	}
	if _, err := pc.WriteTo([]byte("to the good"), goodAddr); err != nil {
		t.Fatal(err)
	}
	gc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := gc.Read(buf); err != nil || string(buf[:n]) != "to the good" {
		t.Fatalf("the other peer's datagram: %q %v", buf[:n], err)
	}
	waitFor(t, "the broken session to end in the daemon", 5*time.Second, func() bool {
		return len(appSessions(t, d, "hostile")) == 0
	})
}
