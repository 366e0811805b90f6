package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPLossKernel: with the wire between A and B losing 1% of the
// frames, delaying the others by 2 ms and sending 5% of those at once,
// ahead of the delayed ones (netem's "loss 1% delay 2ms reorder 5%",
// done by the rig's relay, each way), an app on B moves 100 MiB each way
// exact with kernel servers on A at once: to one that answers the
// SHA-256 of what it read, and from one that sends it; gVisor's
// retransmissions show the loss was there.
//
// Each way has a connection of its own. One connection carrying both (an
// echo) is TestTCPPeerShrinksWindow's subject.
func TestTCPLossKernel(t *testing.T) {
	const size = 100 << 20
	rig, d := tcpRigWith(t, nstest.Options{Relay: true})
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	want := sha256.Sum256(data)
	up := kernelListen(t, rig.A, ":7800")
	go serveEach(up, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			c.Write(h.Sum(nil))
		}
	})
	down := kernelListen(t, rig.A, ":7801")
	go serveEach(down, func(c net.Conn) { c.Write(data) })
	a := attach(t, d, app.Options{Name: "lossy", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	dial := func(port uint16) net.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, port).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// About 25 s here on a quiet machine, as the wire's round
		// trips and losses set the pace; more when it is busy.
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		return c
	}
	imp := nstest.Impairment{Loss: 0.01, Delay: 2 * time.Millisecond, Reorder: 0.05}
	if err := rig.Impair(imp); err != nil {
		t.Fatal(err)
	}
	relayBefore := rig.RelayStats()
	before := d.Engine().TCPStats().Retransmits
	start := time.Now()
	cu, cd := dial(7800), dial(7801)
	var wg sync.WaitGroup
	var uerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := cu.Write(data); err != nil {
			uerr = fmt.Errorf("write: %w", err)
			return
		}
		if err := cu.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			uerr = fmt.Errorf("close write: %w", err)
			return
		}
		sum, err := io.ReadAll(cu)
		if err != nil || !bytes.Equal(sum, want[:]) {
			uerr = fmt.Errorf("the server's SHA-256 %x (%v), want %x", sum, err, want)
		}
	}()
	got, derr := io.ReadAll(cd)
	wg.Wait()
	if uerr != nil || derr != nil {
		t.Fatalf("to A: %v; from A: %v, after %v", uerr, derr, time.Since(start))
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("from A: %d bytes, not what A sent", len(got))
	}
	rt := d.Engine().TCPStats().Retransmits - before
	st := rig.RelayStats()
	t.Logf("100 MiB each way through %+v in %v; %d segments retransmitted by gVisor; the relay carried %d frames, dropped %d, sent %d ahead, held %d (%d over its limit)",
		imp, time.Since(start), rt, st.Frames-relayBefore.Frames, st.Dropped-relayBefore.Dropped,
		st.Reordered-relayBefore.Reordered, st.Delayed-relayBefore.Delayed, st.Overflow-relayBefore.Overflow)
	if rt == 0 || st.Dropped == relayBefore.Dropped || st.Reordered == relayBefore.Reordered {
		t.Fatal("no retransmission, loss or reordering: the relay did not act")
	}
}

// TestTCPPeerShrinksWindow: a kernel echo server on A cuts its socket
// buffers to 4 KiB in the middle of a 32 MiB echo with an app on B. Its
// receive buffer then holds more than it may, so it drops what arrives
// and offers a window of nothing past what it took, below gVisor's next
// sequence number; its echo soon blocks on a full send buffer and stops
// reading. It reads again only once it learns that its data arrived,
// which takes an acknowledgement inside its window: gVisor's bare ones,
// sent with its next sequence number, were dropped, and the connection
// stalled for good in 4 of 5 runs (datapath/tcp's package doc says what
// the link does about it). Every byte comes back exact.
func TestTCPPeerShrinksWindow(t *testing.T) {
	const size, cutAt, cutTo = 32 << 20, 8 << 20, 4 << 10
	rig, d := tcpRig(t)
	ln := kernelListen(t, rig.A, ":7900")
	go serveEach(ln, func(c net.Conn) {
		buf := make([]byte, 16<<10)
		for total, cut := 0, false; ; {
			n, err := c.Read(buf)
			if _, werr := c.Write(buf[:n]); err != nil || werr != nil {
				return
			}
			if total += n; total >= cutAt && !cut {
				cut = true
				rc, err := c.(*net.TCPConn).SyscallConn()
				if err != nil {
					return
				}
				_ = rc.Control(func(fd uintptr) {
					_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, cutTo)
					_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, cutTo)
				})
			}
		}
	})
	a := attach(t, d, app.Options{Name: "shrink", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7900).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	before := d.Engine().TCPStats().AcksClamped
	start := time.Now()
	got := make([]byte, size)
	for off := 0; off < size; {
		// A stall is no byte for 20 s; the echo takes 1-2 s here.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(got[off:])
		off += n
		if err != nil {
			out, _ := exec.Command("ip", "netns", "exec", rig.A.Name, "ss", "-tnie", "sport = :7900").CombinedOutput()
			skipped, _ := exec.Command("ip", "netns", "exec", rig.A.Name, "nstat", "-az", "TcpExtTCPACKSkippedSeq").CombinedOutput()
			t.Fatalf("echo stalled after %d bytes (%v): %v\nA's socket:\n%s\n%s", off, time.Since(start), err, out, skipped)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the echo differs from what was sent")
	}
	t.Logf("32 MiB echoed in %v; %d bare acknowledgements lowered into A's window", time.Since(start), d.Engine().TCPStats().AcksClamped-before)
}
