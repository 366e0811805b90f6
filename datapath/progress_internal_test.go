package datapath

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestProgressWakes: a wait returns at once when its condition holds,
// wakes on the note that follows a change (not on a timer), and returns
// ctx's error when ctx ends first.
func TestProgressWakes(t *testing.T) {
	var p progress
	if err := p.wait(context.Background(), func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	var v atomic.Int64
	done := make(chan error, 1)
	go func() { done <- p.wait(context.Background(), func() bool { return v.Load() == 3 }) }()
	for i := 1; i <= 3; i++ {
		time.Sleep(10 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("returned at %d of 3: %v", i-1, err)
		default:
		}
		v.Store(int64(i))
		p.note()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait missed the note after the change it waited for")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.wait(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past ctx: %v, want context.DeadlineExceeded", err)
	}
}
