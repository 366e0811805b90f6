package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo"
)

func init() { childApps["burstexit"] = burstExitChild }

// burstExitChild sends COUNT datagrams of SIZE bytes, each starting with
// its sequence number, to the address its argument gives ("COUNT SIZE
// ADDR:PORT [dial]"), from a wire listener or, with "dial", a connected
// session, prints "sent" and exits without closing anything, its tx fifo
// 4 MiB: a program that ends with os.Exit or log.Fatal, or is killed,
// right after its last write.
func burstExitChild(sock, arg string) int {
	var count, size int
	dst := childArgs(arg, &count, &size)
	if dst == nil || size < 4 {
		return 2
	}
	o := app.Options{Socket: sock, Name: "burstexit", TxFifoSize: 4 << 20}
	var write func([]byte) error
	if f := strings.Fields(arg); len(f) > 3 && f[3] == "dial" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := app.Attach(ctx, o)
		if err != nil {
			fmt.Println("attach", err)
			return 1
		}
		c, err := a.Dial(ctx, "udp://"+dst.String())
		if err != nil {
			fmt.Println("dial", err)
			return 1
		}
		write = func(b []byte) error { _, err := c.Write(b); return err }
	} else {
		_, pc := childListenWith(o, "udp://0.0.0.0:0")
		if pc == nil {
			return 1
		}
		write = func(b []byte) error { _, err := pc.WriteTo(b, dst); return err }
	}
	b := make([]byte, size)
	for i := range count {
		binary.BigEndian.PutUint32(b, uint32(i))
		if err := write(b); err != nil {
			fmt.Println("write", i, err)
			return 1
		}
	}
	fmt.Println("sent")
	return 0 // no Close: the process exits with datagrams in its tx fifo
}

// TestPacketConnDatagramsBeforeExitGoOut: every datagram an app wrote
// before its process exited without closing reaches its peer, as every
// datagram a process sent through a kernel socket does: the daemon sends
// what the app's tx fifos hold before it detaches the app. Frames to host
// A, and datagrams larger than a frame (the kernel path, through the
// socket that holds the port), from a listener and from a connected
// session. Before, what the worker had not
// taken from the fifo when the daemon saw the app's connection close was
// dropped with the app's memory.
func TestPacketConnDatagramsBeforeExitGoOut(t *testing.T) {
	rig, d := tcpRig(t)
	for _, c := range []struct {
		count, size int
		how         string
	}{{15000, 200, "listen"}, {400, 6000, "listen"}, {15000, 200, "dial"}, {400, 6000, "dial"}} {
		sink, err := bindKernel(rig.A, fmt.Sprintf("0.0.0.0:%d", localDestPort))
		if err != nil {
			t.Fatal(err)
		}
		forceRcvBuf(t, sink, 64<<20)
		ch := startChildAppIn(t, rig.B, "burstexit", d.Socket(), fmt.Sprintf("%d %d %v %s", c.count, c.size, netip.AddrPortFrom(rig.A.IPv4, localDestPort), c.how))
		ch.expect(t, "sent")
		ch.cmd.Wait()
		got, first := readNumbered(sink, c.count, c.size)
		sink.Close()
		if got != c.count {
			t.Errorf("%d datagrams of %d bytes written (%s) before the app exited: %d arrived (the first missing: #%d)", c.count, c.size, c.how, got, first)
		}
	}
}

// forceRcvBuf sets c's receive buffer to n bytes past net.core.rmem_max
// (SO_RCVBUFFORCE, as root), so that a test's sink drops nothing.
func forceRcvBuf(t *testing.T, c *net.UDPConn, n int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestDetachBoundedByUndrainableTxFifo: an app whose UDP tx fifo the
// datapath can never drain (the app wrote a tail index short of a record)
// and whose connection then ends is detached as soon as the flush saw the
// worker find the fifo corrupt, not held for the flush's whole bound: a
// hostile app's detach costs the daemon little.
func TestDetachBoundedByUndrainableTxFifo(t *testing.T) {
	rig, d := tcpRig(t)
	h := newHostileSoakApp(t, d, rig, 1, false)
	h.attach(false)
	h.bind("udp", false)
	var tx *fifo.Fifo
	for _, f := range h.fifos {
		if f.tx {
			tx = f.f
		}
	}
	if !h.attached || tx == nil {
		t.Fatalf("no UDP listener to scribble on: %s", h.stats())
	}
	head := binary.NativeEndian.Uint32(hsHeader(tx)[fifo.FifoOffHead:])
	hsPut32(tx, fifo.FifoOffTail, head+8)
	tx.SetEvent()
	h.kick()
	corrupt := func() uint64 { return d.Engine().Stats().Totals.Drops["tx-fifo-corrupt"] }
	waitFor(t, "the worker to meet the corrupt tx fifo", 5*time.Second, func() bool { return corrupt() > 0 })
	start := time.Now()
	h.close()
	waitFor(t, "the app to be detached", 5*time.Second, func() bool { return len(d.AppViews()) == 0 })
	if took := time.Since(start); took >= exitLinger {
		t.Errorf("detached %v after its connection closed, want the flush to give up on the corrupt fifo at once, well before its bound %v", took, exitLinger)
	}
}

// TestCutThroughDatagramsBeforeExitArrive: datagrams an app wrote to
// another app of the host (a cut-through session, 127.0.0.1) before its
// process exited without closing are all read by the other app, as a
// kernel socket's datagrams queued at a receiver outlive their sender.
func TestCutThroughDatagramsBeforeExitArrive(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "sink", RxFifoSize: 1 << 20})
	pc, err := a.ListenPacket("udp://0.0.0.0:7960")
	if err != nil {
		t.Fatal(err)
	}
	const count = 2000
	ch := startChildAppIn(t, rig.B, "burstexit", d.Socket(), fmt.Sprintf("%d 200 127.0.0.1:7960 dial", count))
	ch.expect(t, "sent")
	ch.cmd.Wait()
	if got, first := readNumbered(pc, count, 200); got != count {
		t.Errorf("%d datagrams written cut-through before the app exited: %d read (the first missing: #%d)", count, got, first)
	}
}

// readNumbered reads datagrams of size bytes numbered 0 to count-1 (their
// first four bytes, as burstExitChild sends them) from c until it has
// each or none came for 2 s, and returns how many it got and the first
// number missing (-1: none).
func readNumbered(c net.PacketConn, count, size int) (got, firstMissing int) {
	seen := make([]bool, count)
	buf := make([]byte, size+1)
	for got < count {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		if i := binary.BigEndian.Uint32(buf); n == size && int(i) < count && !seen[i] {
			seen[i] = true
			got++
		}
	}
	for i, ok := range seen {
		if !ok {
			return got, i
		}
	}
	return got, -1
}
