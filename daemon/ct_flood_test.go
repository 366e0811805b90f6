package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// TestCutThroughConnectFlood: another app's connects to a listener, each
// closed at once, as fast as the daemon answers them, keep the listening
// app attached though it reads its notices more slowly than they come:
// an Accepted notice its queue has no room to spare for is refused to the
// connecting app (connection refused), where it overflowed the listening
// app's queue and dropped it with all it had. After the flood the
// listening app still binds.
func TestCutThroughConnectFlood(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var accepted atomic.Int64
	victim, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "slow", Notify: func(m api.Message, fds []int) {
		api.CloseFDs(fds)
		if _, ok := m.(*api.Accepted); ok {
			accepted.Add(1)
			time.Sleep(time.Millisecond) // a listening app slower than the connects
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	_, fds, err := victim.Call(ctx, &api.Attach{Name: "slow", Scope: flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := victim.Call(ctx, &api.Bind{URI: "tcp://0.0.0.0:7000"}); err != nil {
		t.Fatal(err)
	}

	var connects, refused atomic.Int64
	var other atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "flood"})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, fds, err := cl.Call(ctx, &api.Attach{Name: "flood", Scope: flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096})
		api.CloseFDs(fds)
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 200 {
					r, fds, err := cl.Call(ctx, &api.Connect{URI: "tcp://127.0.0.1:7000"})
					api.CloseFDs(fds)
					switch {
					case errors.Is(err, syscall.ECONNREFUSED):
						refused.Add(1)
						continue
					case err != nil:
						other.CompareAndSwap(nil, err)
						return
					}
					connects.Add(1)
					if cr, ok := r.(*api.ConnectReply); ok {
						if _, fds, err := cl.Call(ctx, &api.Disconnect{Handle: cr.Handle}); err == nil {
							api.CloseFDs(fds)
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d connects, %d refused, %d accepted by the time the flood ended", connects.Load(), refused.Load(), accepted.Load())
	if err, _ := other.Load().(error); err != nil {
		t.Errorf("a connect failed otherwise than refused: %v", err)
	}
	if refused.Load() == 0 {
		t.Errorf("no connect was refused: the listening app kept up, and the test shows nothing")
	}
	if _, _, err := victim.Call(ctx, &api.Bind{URI: "tcp://0.0.0.0:7001"}); err != nil {
		t.Fatalf("the listening app after the flood: %v", err)
	}
}
