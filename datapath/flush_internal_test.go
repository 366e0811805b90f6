package datapath

import (
	"context"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// TestFlushTx: FlushTx waits while the worker takes datagrams from the
// tx fifo, however long that takes within its bound, gives up on a fifo
// nothing is taken from for flushStall and at once on one the worker
// found corrupt, and returns at once when nothing is queued. The memRig's
// worker does not run: the test takes the datagrams as the worker would.
func TestFlushTx(t *testing.T) {
	r := newMemRig(t, 4096)
	h, _ := r.listen(t, "udp://10.9.0.2:5000")
	tgt := (*r.e.lis.Load())[h]
	if tgt == nil {
		t.Fatal("no Target for the listener")
	}
	tx := tgt.Tx
	queue := func(n int) {
		t.Helper()
		hd := fifo.DgramHeader{Family: flow.Family4, RemotePort: 9, Remote: flow.AddrBytes(tRemote4)}
		for range n {
			if err := tx.EnqueueDgram(&hd, make([]byte, 32)); err != nil {
				t.Fatal(err)
			}
		}
	}
	take := func() {
		var hd fifo.DgramHeader
		if _, err := tx.DequeueDgram(&hd, make([]byte, 64)); err != nil {
			t.Error(err)
		}
	}
	flush := func() (bool, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		ok := r.e.FlushTx(ctx, r.app)
		return ok, time.Since(start)
	}

	if ok, took := flush(); !ok || took > flushStall {
		t.Errorf("nothing queued: %v after %v, want true at once", ok, took)
	}

	// Taken one at a time, each well within flushStall of the one
	// before, over several times flushStall.
	queue(10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			time.Sleep(flushStall / 4)
			take()
		}
	}()
	ok, took := flush()
	<-done
	if !ok || tx.Queued() || took < 2*flushStall {
		t.Errorf("taken one by one: %v after %v, queued after: %v; want true once all were taken (%v)", ok, took, tx.Queued(), 10*flushStall/4)
	}

	// Nothing taken: given up after flushStall, not at the bound.
	queue(1)
	if ok, took := flush(); ok || took < flushStall || took > time.Second {
		t.Errorf("nothing taken: %v after %v, want false after about %v", ok, took, flushStall)
	}
	if !tx.HasEvent() {
		t.Error("the fifo's event flag is not set: its worker would not look")
	}

	// Found corrupt by the worker once the flush began: given up at once.
	go func() {
		time.Sleep(flushPoll)
		tgt.TxCorrupt.Add(1)
	}()
	if ok, took := flush(); ok || took >= flushStall {
		t.Errorf("found corrupt: %v after %v, want false before %v", ok, took, flushStall)
	}
	take()
}
