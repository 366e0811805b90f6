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
	go func() { errc <- inNamespaceOnThread(nsfd, fn) }()
	return <-errc
}

// inNamespaceOnThread is inNamespace's goroutine. It closes its handle of
// the thread's own namespace before it returns, so that inNamespace's
// caller never sees that descriptor open.
func inNamespaceOnThread(nsfd int, fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open own namespace: %w", err) // the thread is discarded
	}
	defer unix.Close(orig)
	if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
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
