package nsbind

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNamespace runs fn on a locked OS thread moved into the network
// namespace nsfd, then moves the thread back. A thread that cannot be moved
// back stays locked and ends with its goroutine, so it never returns to the
// runtime in the wrong namespace.
func inNamespace(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own namespace: %w", err)
			return // the thread is discarded
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// in runs fn inside the namespace on a locked OS thread.
func (n *Namespace) in(verb string, fn func() error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.h == nil {
		return fmt.Errorf("%s: %w", verb, ErrClosed)
	}
	if err := inNamespace(int(n.ns), fn); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	return nil
}
