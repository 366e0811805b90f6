package datapath_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath"
)

// TestCaptureEcho runs the paced echo with a capture of every frame and a
// reader draining it concurrently: every datagram still comes back, and
// every frame the workers received or sent is either captured or counted
// as lost.
func TestCaptureEcho(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	a := r.attach(t)
	r.listenEcho(t, a, "udp://0.0.0.0:9000")
	c, err := r.eng.StartCapture(datapath.CaptureFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var captured, rx, tx atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		drain := func() {
			c.Read(func(rec *datapath.CaptureRecord) bool {
				captured.Add(1)
				if rec.Dir == datapath.CaptureRx {
					rx.Add(1)
				} else {
					tx.Add(1)
				}
				if len(rec.Data) != rec.Len {
					t.Errorf("frame of %d bytes captured as %d", rec.Len, len(rec.Data))
				}
				return true
			})
		}
		for {
			select {
			case <-stop:
				drain()
				return
			case <-time.After(2 * time.Millisecond):
				drain()
			}
		}
	}()
	const n = 20000
	res := runClient(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0), netip.AddrPortFrom(r.p.B.IPv4, 9000), n, 1472, 64, 7)
	r.eng.StopCapture(c)
	time.Sleep(50 * time.Millisecond) // the workers' last loop with the capture
	close(stop)
	wg.Wait()
	st := r.eng.Stats()
	t.Logf("echo %+v; captured %d (rx %d, tx %d), lost %d; worker rx %d tx %d", res, captured.Load(), rx.Load(), tx.Load(), c.Lost(),
		st.Totals.Rx, st.Totals.Tx)
	if res.sent != n || res.received != n || res.mismatched != 0 {
		t.Fatalf("echo with a capture running: sent %d, received %d, mismatched %d", res.sent, res.received, res.mismatched)
	}
	if got, want := uint64(captured.Load())+c.Lost(), st.Totals.Rx+st.Totals.Tx; got != want {
		t.Errorf("captured %d + lost %d = %d, want the %d frames received and sent", captured.Load(), c.Lost(), got, want)
	}
}
