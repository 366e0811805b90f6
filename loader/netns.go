package loader

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

const threadNetns = "/proc/thread-self/ns/net"

// nsInode returns the inode number of the namespace file f.
func nsInode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st.Ino, nil
}

// inNetns runs fn on a locked OS thread inside the network namespace whose
// file is path, passing the namespace's inode number. An empty path means the
// calling thread's namespace (fn then runs on the calling goroutine, locked to
// its thread). The calling goroutine's namespace is never changed; a thread
// that cannot be switched back is discarded.
func inNetns(path string, fn func(ino uint64) error) error {
	if path == "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f, err := os.Open(threadNetns)
		if err != nil {
			return fmt.Errorf("open current netns: %w", err)
		}
		ino, err := nsInode(f)
		f.Close()
		if err != nil {
			return err
		}
		return fn(ino)
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer target.Close()
	ino, err := nsInode(target)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(threadNetns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn(ino)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
