package daemon

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestHotQueueSignalsApp sends bursts from a kernel socket on host A fast
// enough that the worker takes them as a hot queue (it naps between
// batches and holds back the app's rx signals), then stops: every
// datagram the worker queued must reach the app with no more traffic to
// carry a late signal. A held signal that was never sent leaves the app
// asleep on a fifo with data, and the read times out.
func TestHotQueueSignalsApp(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "sink", RxFifoSize: 4 << 20})
	pc, err := a.ListenPacketConn("udp://0.0.0.0:7012")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := kernelClient(t, rig.A)
	to := netip.AddrPortFrom(rig.B.IPv4, 7012)
	queued := func() uint64 { return d.Engine().Stats().Totals.Delivered }
	// settled waits until the worker has queued all it will of a burst.
	settled := func() uint64 {
		last, since := queued(), time.Now()
		for time.Since(since) < 20*time.Millisecond {
			time.Sleep(2 * time.Millisecond)
			if n := queued(); n != last {
				last, since = n, time.Now()
			}
		}
		return last
	}
	// The app reads all along, as a sink does: it empties its fifo faster
	// than the worker fills it and sleeps between batches, so each batch
	// the worker queues must come with a signal, sent or held and sent.
	var read atomic.Uint64
	done := make(chan error, 1)
	go func() {
		msgs := make([]app.Message, 64)
		for {
			n, err := pc.ReadBatch(msgs)
			if err != nil {
				done <- err
				return
			}
			read.Add(uint64(n))
		}
	}()
	payload := make([]byte, 64)
	for round := range 20 {
		for range 3000 {
			if _, err := cli.WriteToUDPAddrPort(payload, to); err != nil {
				t.Fatal(err)
			}
		}
		want := settled()
		deadline := time.Now().Add(time.Second)
		for {
			got := read.Load()
			if got >= want {
				// All read, or more than looked queued: a worker held
				// off its CPU for longer than settled waits (under a
				// loaded machine) queued the rest of the burst since.
				// Done once nothing more is queued.
				n := settled()
				if n == got {
					break
				}
				if n < got {
					t.Fatalf("round %d: the app read %d datagrams, %d were queued", round, got, n)
				}
				want, deadline = n, time.Now().Add(time.Second)
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the app read %d of the %d datagrams queued, a second after the last", round, got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	pc.Close()
	<-done
	if d.Engine().Stats().Totals.Naps == 0 {
		t.Fatal("the worker never napped: the bursts were not a hot queue, the held signals untested")
	}
}
