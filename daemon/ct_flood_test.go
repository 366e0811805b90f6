package daemon

import (
	"cmp"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestCutThroughConnectFlood: another app's connects to a listener, each
// closed at once, as fast as the daemon answers them, keep the listening
// app attached though it reads its notices more slowly than they come: an
// Accepted notice its queue has no room to spare for waits for room (the
// connect with it), and is refused to the connecting app (connection
// refused) if none comes, where it overflowed the listening app's queue and
// dropped it with all it had. After the flood the listening app still
// binds.
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
				for range 100 {
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
	if _, _, err := victim.Call(ctx, &api.Bind{URI: "tcp://0.0.0.0:7001"}); err != nil {
		t.Fatalf("the listening app after the flood: %v", err)
	}
}

// TestCutThroughConnectBurst: 256 connects at once from one app to
// another's listener all succeed, as they would to a kernel listener with
// its default backlog: the burst waits for the listening app's notices to
// go out rather than being refused.
func TestCutThroughConnectBurst(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "server", Scope: flow.ScopeLocal})
	ln, err := srv.Listen("tcp://0.0.0.0:7870")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cli := attach(t, d, app.Options{Name: "client", Scope: flow.ScopeLocal})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const burst = 256
	errs := make(chan error, burst)
	var conns sync.WaitGroup
	for range burst {
		conns.Add(1)
		go func() {
			defer conns.Done()
			c, err := cli.Dial(ctx, "tcp://127.0.0.1:7870")
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	conns.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d connects at once failed, the first: %v", failed, burst, first)
	}
}
