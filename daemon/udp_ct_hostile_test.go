package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// TestUDPListenerOutlivesCorruptPeer: an app that breaks the fifo of its
// cut-through session to another app's UDP listener (a datagram
// record's length larger than what is queued, or the fifo's tail index
// past its size) costs the listener that session only: its reads go on
// with its other peers' datagrams, no read fails, the broken session is
// ended and what the listener held of it (its segment's mapping, its
// eventfd) goes, and the hostile app's session is gone from the daemon.
// Before, every read that came to the broken session's turn failed with
// "fifo: corrupt shared state", and the session and what it held stayed
// until the listener closed; a fifo with a broken tail read as empty, so
// it was never ended, and stayed until the peer closed it.
func TestUDPListenerOutlivesCorruptPeer(t *testing.T) {
	if raceEnabled {
		// The test reads and writes the session's segment through the
		// daemon's mapping, which the daemon closes when the session
		// ends, ordered only by system calls the race detector does not
		// see.
		t.Skip("reads the daemon's mapping of a segment the daemon later closes")
	}
	t.Run("record", func(t *testing.T) { testListenerOutlivesCorruptPeer(t, 7930, breakQueuedDgram) })
	t.Run("tail", func(t *testing.T) { testListenerOutlivesCorruptPeer(t, 7938, breakTail) })
}

// breakTail sets the tail of the one session of app name's tx fifo past
// the fifo's size from its head, as a hostile producer may.
func breakTail(t *testing.T, d *Daemon, name string, _ net.Conn) {
	t.Helper()
	for _, p := range appSessions(t, d, name) {
		fifotest.SetTail(p.Tx, fifotest.Head(p.Tx)+p.Tx.Size()+64)
	}
}

func testListenerOutlivesCorruptPeer(t *testing.T, port int, breakFifo func(*testing.T, *Daemon, string, net.Conn)) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "listener"})
	pc, err := srv.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	good := attach(t, d, app.Options{Name: "good"})
	hostile := attach(t, d, app.Options{Name: "hostile"})
	dial := func(a *app.App) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, fmt.Sprintf("udp://127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	buf := make([]byte, 2048)
	// Each session delivers first: the listener has its end.
	hello := func(c net.Conn) {
		t.Helper()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("first datagram: %q %v", buf[:n], err)
		}
	}
	gc := dial(good)
	hello(gc)
	// The eventfds of the process before the hostile app's session.
	efds := eventfds(t)
	hc := dial(hostile)
	hello(hc)
	// What the process holds of the hostile app's session: its segment
	// (the daemon's, the listener's and the hostile app's descriptors and
	// mappings) and the two eventfds it added, each end's that wakes the
	// other app (the listener's end holds the one that wakes the hostile
	// app).
	var ctEFDs []string
	for id := range eventfds(t) {
		if efds[id] == 0 {
			ctEFDs = append(ctEFDs, id)
		}
	}
	if len(ctEFDs) != 2 {
		t.Fatalf("the hostile app's session added eventfds %v, want its two ends'", ctEFDs)
	}
	pairs := appSessions(t, d, "hostile")
	if len(pairs) != 1 {
		t.Fatalf("%d sessions of the hostile app, want 1", len(pairs))
	}
	var seg memfdID
	for _, p := range pairs {
		seg = memfdOf(t, p.Segment.FD())
	}
	if _, maps := seg.held(t); maps < 3 {
		t.Fatalf("%d mappings of the session's segment %s, want the daemon's, the listener's and the hostile app's", maps, seg.name)
	}
	breakFifo(t, d, "hostile", hc)
	for i := range 50 {
		msg := fmt.Appendf(nil, "good %d", i)
		if _, err := gc.Write(msg); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read %d after the peer broke its fifo: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("read %d: %q, want %q", i, buf[:n], msg)
		}
	}
	waitFor(t, "the broken session to end in the daemon", 5*time.Second, func() bool {
		return len(appSessions(t, d, "hostile")) == 0
	})
	// The daemon and the listener let go of the segment, with no read
	// needed to have the listener drop it: the hostile app's mapping is
	// left, which it keeps until it closes its end. Of the two eventfds,
	// one is gone, the listener's; the other, the hostile app's end's,
	// is left.
	waitFor(t, "the listener to let go of the broken session's segment and eventfd", 5*time.Second, func() bool {
		_, maps := seg.held(t)
		ids := eventfds(t)
		return maps == 1 && (ids[ctEFDs[0]] == 0) != (ids[ctEFDs[1]] == 0)
	})
	// The listener reads on.
	if _, err := gc.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("read after the session ended: %q %v", buf[:n], err)
	}
	// The hostile app goes, the listener stays open (and reads no more):
	// nothing of the session is left, so what was left above was the
	// hostile app's (and the daemon's copies of what it sent it), and
	// the listener holds nothing of it.
	hc.Close()
	hostile.Close()
	var fds, maps, efdsLeft int
	for end := time.Now().Add(5 * time.Second); ; {
		fds, maps = seg.held(t)
		ids := eventfds(t)
		efdsLeft = ids[ctEFDs[0]] + ids[ctEFDs[1]]
		if fds+maps+efdsLeft == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fds+maps+efdsLeft != 0 {
		t.Errorf("with the hostile app gone and the listener open: %d descriptors and %d mappings of the broken session's segment, %d descriptors of its eventfds; want none",
			fds, maps, efdsLeft)
	}
	if n := pc.(*app.PacketConn).BrokenPeers(); n != 1 {
		t.Errorf("BrokenPeers %d, want 1", n)
	}
}

// TestUDPListenerDropsClosedPeerUnread: a cut-through peer of a UDP
// listener closes its session. What it sent before is still read; once
// it is, or at once if there was nothing, the listener lets go of the
// session's segment and eventfds without another read to do it, as a
// kernel socket holds nothing of a peer that went. Before, the segment
// stayed mapped until the listener's next read, for good on a listener
// nobody reads any more.
func TestUDPListenerDropsClosedPeerUnread(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "listener"})
	pc, err := srv.ListenPacket("udp://0.0.0.0:7932")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer := attach(t, d, app.Options{Name: "peer"})
	buf := make([]byte, 2048)
	for _, unread := range []bool{false, true} {
		efds, before := eventfds(t), ctSegments(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := peer.Dial(ctx, "udp://127.0.0.1:7932")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("first datagram: %q %v", buf[:n], err)
		}
		seg := newCTSegment(t, before)
		if unread {
			if _, err := c.Write([]byte("last")); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		gone := func() bool {
			fds, maps := seg.held(t)
			for id, n := range eventfds(t) {
				if efds[id] < n {
					return false
				}
			}
			return fds+maps == 0
		}
		if unread {
			// Held until what the peer sent last is read.
			time.Sleep(200 * time.Millisecond)
			if gone() {
				t.Fatal("the listener let go of a closed peer's session before its last datagram was read")
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "last" {
				t.Fatalf("the closed peer's last datagram: %q %v", buf[:n], err)
			}
		}
		waitFor(t, fmt.Sprintf("the closed peer's segment and eventfds to go (datagram left unread: %v)", unread), 5*time.Second, gone)
	}
}

// ctSegments lists the cut-through segments the process has descriptors
// of, by inode. It reads /proc alone, so the race detector sees no read
// of the daemon's state.
func ctSegments(t *testing.T) map[uint64]memfdID {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]memfdID{}
	for _, e := range ents {
		p := "/proc/self/fd/" + e.Name()
		l, err := os.Readlink(p)
		var st unix.Stat_t
		if err != nil || !strings.HasPrefix(l, "/memfd:xsessiond:ct-") || unix.Stat(p, &st) != nil {
			continue
		}
		out[st.Ino] = memfdID{st.Ino, l}
	}
	return out
}

// newCTSegment returns the one cut-through segment the process has that
// it did not in before.
func newCTSegment(t *testing.T, before map[uint64]memfdID) memfdID {
	t.Helper()
	var found []memfdID
	for ino, m := range ctSegments(t) {
		if _, ok := before[ino]; !ok {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("new cut-through segments %v, want one", found)
	}
	return found[0]
}

// openFDs counts the test process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestUDPListenerNotHeldByPeerThatNeverReads: an echo on a UDP listener
// answers each datagram with WriteTo from one goroutine, as a server on
// a kernel socket does; a cut-through peer that sends and never reads
// fills the fifo of its answers. The echo goes on serving its other
// peers: WriteTo to the full peer drops the datagram (counted in
// PeerDrops), as a datagram to a kernel socket whose receive buffer is
// full is lost, instead of waiting for room. Before, it waited for good,
// and the other peers' datagrams went unanswered.
func TestUDPListenerNotHeldByPeerThatNeverReads(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "echo", RxFifoSize: 4096, TxFifoSize: 4096})
	pc, err := srv.ListenPacket("udp://0.0.0.0:7931")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()
	dial := func(name string) net.Conn {
		t.Helper()
		a := attach(t, d, app.Options{Name: name, RxFifoSize: 4096, TxFifoSize: 4096})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, "udp://127.0.0.1:7931")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	mute, good := dial("mute"), dial("good")
	// The mute peer's answers fill its 4 KiB fifo many times over. Its
	// writes give up after a while: a listener held up reads no more.
	msg := bytes.Repeat([]byte{1}, 1000)
	mute.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for range 64 {
		mute.Write(msg)
	}
	buf := make([]byte, 2048)
	for i := range 20 {
		want := fmt.Appendf(nil, "good %d", i)
		if _, err := good.Write(want); err != nil {
			t.Fatal(err)
		}
		good.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := good.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("echo %d to the other peer: %q %v (the listener held up by the peer that does not read)", i, buf[:n], err)
		}
		mute.Write(msg)
	}
	if pc.(*app.PacketConn).PeerDrops() == 0 {
		t.Error("PeerDrops 0: the answers to the peer that does not read were not dropped")
	}
}

// breakQueuedDgram has app name's only session, hc, queue a datagram to
// the listener, then makes that record's length larger than what is
// queued before the listener reads it, as a hostile app can through the
// memory it shares.
func breakQueuedDgram(t *testing.T, d *Daemon, name string, hc net.Conn) {
	t.Helper()
	pairs := appSessions(t, d, name)
	if len(pairs) != 1 {
		t.Fatalf("%d sessions of the %s app, want 1", len(pairs), name)
	}
	if _, err := hc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs { // the one
		waitFor(t, "the hostile datagram queued", 5*time.Second, func() bool { return fifotest.Tail(p.Tx) != fifotest.Head(p.Tx) })
		off := int(fifotest.Head(p.Tx) % p.Tx.Size())
		binary.NativeEndian.PutUint32(fifotest.Data(p.Tx)[off+fifo.DgramOffLen:], 1<<30)
	}
}

// memfdID identifies a memfd: its inode, and the name it was created
// with.
type memfdID struct {
	ino  uint64
	name string // as /proc/self/fd and /proc/self/maps show it: "/memfd:xsessiond:ct-1-2-3 (deleted)"
}

// memfdOf identifies the memfd open as fd.
func memfdOf(t *testing.T, fd int) memfdID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || !strings.HasPrefix(name, "/memfd:") {
		t.Fatalf("descriptor %d is %q (%v), want a memfd", fd, name, err)
	}
	return memfdID{st.Ino, name}
}

// held counts the process's descriptors of m and its mappings of it.
func (m memfdID) held(t *testing.T) (fds, maps int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := "/proc/self/fd/" + e.Name()
		var st unix.Stat_t
		if l, err := os.Readlink(p); err != nil || l != m.name || unix.Stat(p, &st) != nil || st.Ino != m.ino {
			continue
		}
		fds++
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		// address perms offset dev inode path
		f := strings.SplitN(l, " ", 6)
		if len(f) == 6 && f[4] == strconv.FormatUint(m.ino, 10) && strings.TrimSpace(f[5]) == m.name {
			maps++
		}
	}
	return fds, maps
}

// eventfds counts the process's descriptors of each eventfd, by the id
// the kernel gives it (eventfd-id in /proc/self/fdinfo): descriptors of
// one eventfd (dup'd, or passed over a socket) share it.
func eventfds(t *testing.T) map[string]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != "anon_inode:[eventfd]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		_, rest, ok := strings.Cut(string(info), "eventfd-id:")
		if !ok {
			t.Fatalf("no eventfd-id in the fdinfo of eventfd %s (the kernel says it since 5.2): %s", e.Name(), info)
		}
		id, _, _ := strings.Cut(rest, "\n")
		out[strings.TrimSpace(id)]++
	}
	return out
}
