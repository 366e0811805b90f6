package api

import (
	"context"
	"testing"
)

// TestServeReturnsWithSocketFree: once Serve returned after its context
// ended, the socket and its lock are free: a daemon stopped and started
// again on the same socket (a restart, a test) must not find "another
// daemon is running". Serve closed the listener from the context's
// AfterFunc, which could still be releasing the lock as Serve returned.
func TestServeReturnsWithSocketFree(t *testing.T) {
	path := sockPath(t)
	for i := range 300 {
		l, err := Listen(path, ListenOptions{})
		if err != nil {
			t.Fatalf("round %d: listen after the previous Serve returned: %v", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		s := &Server{Handler: &fakeDaemon{}, Name: "fake"}
		go func() { done <- s.Serve(ctx, l) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: Serve: %v", i, err)
		}
	}
}
