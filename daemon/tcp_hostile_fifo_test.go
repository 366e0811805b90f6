package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// appSessions returns the handles and fifos (the daemon's views) of the
// sessions of the app named name.
func appSessions(t *testing.T, d *Daemon, name string) map[flow.Handle]sessions.FifoPair {
	t.Helper()
	var id sessions.AppID
	for _, a := range d.layer.Apps() {
		if a.Name == name {
			id = a.ID
		}
	}
	if id == 0 {
		t.Fatalf("no app %q", name)
	}
	out := map[flow.Handle]sessions.FifoPair{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for h, p := range d.fifos[id] {
		out[h] = p.pair
	}
	return out
}

// TestTCPHostileTxIndices: an app writes inconsistent indices into the tx
// fifos of its wire TCP sessions (a tail past the fifo's size, a head past
// the tail, a tail that changes between the daemon's reads) while kernel
// peers on host A keep sending to them, and another app streams through
// the same daemon. Each broken session is reset, within a second, with the
// reason said to its app (flow.ErrFifoCorrupt) and counted; its peer gets
// the reset; the other app's stream is exact; nothing of the broken
// sessions stays in the daemon.
func TestTCPHostileTxIndices(t *testing.T) {
	rig, d := tcpRig(t)
	// Host A's server sends a byte every 5 ms on each connection, so that
	// the daemon keeps running it, and reports how the connection ended:
	// the reset is the error of whichever of its reads and writes met it
	// first (the kernel reports it once), the other one then ends with
	// EOF or EPIPE.
	peerEnd := make(chan error, 8)
	tick := kernelListen(t, rig.A, ":7810")
	go serveEach(tick, func(c net.Conn) {
		werr := make(chan error, 1)
		go func() {
			for {
				if _, err := c.Write([]byte{'x'}); err != nil {
					werr <- err
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		peerEnd <- fmt.Errorf("read: %w; write: %w", err, <-werr)
	})
	echo := kernelListen(t, rig.A, ":7811")
	go echoServe(echo)

	victim := attach(t, d, app.Options{Name: "victim"})
	hostile := attach(t, d, app.Options{Name: "hostile", RxFifoSize: 4096, TxFifoSize: 4096})
	vc := dialApp(t, victim, fmt.Sprintf("tcp://%s:7811", rig.A.IPv4))
	const kinds = 3
	hc := make([]net.Conn, kinds)
	for i := range hc {
		hc[i] = dialApp(t, hostile, fmt.Sprintf("tcp://%s:7810", rig.A.IPv4))
	}
	pairs := appSessions(t, d, "hostile")
	if len(pairs) != kinds {
		t.Fatalf("%d sessions of the hostile app, want %d", len(pairs), kinds)
	}
	before := d.Engine().TCPNamespaceStats()[""]
	var corruptBefore uint64
	if before != nil {
		corruptBefore = before.FifoCorrupt
	}

	// The other app streams 8 MiB through its echo meanwhile.
	const total = 8 << 20
	want := make([]byte, total)
	for i := range want {
		want[i] = byte(rand.Uint32())
	}
	var vwg sync.WaitGroup
	var verr error
	got := make([]byte, total)
	vc.SetDeadline(time.Now().Add(60 * time.Second))
	vwg.Add(2)
	go func() {
		defer vwg.Done()
		if _, err := vc.Write(want); err != nil {
			t.Errorf("victim write: %v", err)
		}
	}()
	go func() {
		defer vwg.Done()
		_, verr = io.ReadFull(vc, got)
	}()

	// The damage, one kind per session.
	stop := make(chan struct{})
	var fwg sync.WaitGroup
	k := 0
	start := time.Now()
	for _, p := range pairs {
		tx := p.Tx
		head := fifotest.Head(tx)
		switch k {
		case 0: // tail past the size
			fifotest.SetTail(tx, head+tx.Size()+1)
		case 1: // head past the tail
			fifotest.SetTail(tx, head-1)
		case 2: // a tail that changes between reads
			fwg.Add(1)
			go func() {
				defer fwg.Done()
				for i := uint32(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if i%2 == 0 {
						fifotest.SetTail(tx, head)
					} else {
						fifotest.SetTail(tx, head+2*tx.Size()+i)
					}
				}
			}()
		}
		k++
	}
	// Each broken session's reads end with the reason.
	var rwg sync.WaitGroup
	readErrs := make([]error, kinds)
	for i, c := range hc {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, readErrs[i] = io.Copy(io.Discard, c)
		}()
	}
	rwg.Wait()
	took := time.Since(start)
	close(stop)
	fwg.Wait()
	for i, err := range readErrs {
		if !errors.Is(err, flow.ErrFifoCorrupt) {
			t.Errorf("hostile connection %d: reads ended with %v, want flow.ErrFifoCorrupt", i, err)
		}
	}
	if took > time.Second {
		t.Errorf("the broken sessions ended %v after the damage, want within a second", took)
	}
	for range kinds {
		select {
		case err := <-peerEnd:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("a peer of a broken session: %v, want a reset", err)
			}
		case <-time.After(time.Second):
			t.Fatal("a peer of a broken session did not see its end within a second")
		}
	}
	if st := d.Engine().TCPNamespaceStats()[""]; st == nil || st.FifoCorrupt-corruptBefore != kinds {
		t.Errorf("namespace stats %+v: want %d more connections reset for a corrupt fifo", st, kinds)
	}

	vwg.Wait()
	if verr != nil || !bytes.Equal(got, want) {
		t.Fatalf("the other app's echo: %v, equal %v", verr, bytes.Equal(got, want))
	}
	for _, c := range hc {
		c.Close()
	}
	waitFor(t, "the hostile app's sessions to go", 5*time.Second, func() bool {
		return len(appSessions(t, d, "hostile")) == 0 && d.Engine().TCPStats().Conns == 1
	})
}
