package datapath_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestPostWakesSleepingWorker posts functions to an idle worker's mailbox,
// each a few µs after the last one ran or after a sleep, with a 30 s poll
// timeout: each must run within a second, so every post to a worker asleep
// in poll, or on its way there, wakes it (worker.wakeUp). Which side sees
// the other in each interleaving is TestWakeUpProtocol's; here the worker
// and its eventfd are the Engine's.
func TestPostWakesSleepingWorker(t *testing.T) {
	r := newEngineRigWith(t, 1, 1520, func(c *datapath.Config) { c.IdleTimeout = 30 * time.Second })
	sh := r.l.Shard(0)
	ran := make(chan time.Time, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	var worst time.Duration
	for i := range 2000 {
		// Mostly a busy wait of 0–20 µs after the last function ran,
		// while the worker finishes that loop and goes to sleep; now and
		// then a sleep, after which the worker sleeps in poll.
		if rng.IntN(8) == 0 {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		} else {
			for until := time.Now().Add(time.Duration(rng.IntN(20_000))); time.Now().Before(until); {
			}
		}
		posted := time.Now()
		sh.Post(func(*sessions.Shard) { ran <- time.Now() })
		select {
		case at := <-ran:
			worst = max(worst, at.Sub(posted))
		case <-time.After(time.Second):
			t.Fatalf("post %d did not run within 1s", i)
		}
	}
	t.Logf("2000 posts, the slowest ran %v after it was posted", worst)
}
