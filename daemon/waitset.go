package daemon

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// An app waits on an epoll set the daemon makes (its event queue's
// WaitFD, which the daemon's writes and its cut-through peers' eventfds
// wake). The kernel charges the watches of an epoll set to the user that
// created it, against fs.epoll.max_user_watches: a set the daemon made as
// root would let an app spend root's budget, which every root service on
// the host shares, by adding watches to it (epoll_ctl on its WaitFD, with
// as many descriptors as its limit lets it open). So each app's set is
// made in the name of the app's uid: its watches are its user's.

// waitSetAsUnsupported is set once creating a set in another user's name
// failed for want of the right (a daemon without CAP_SETUID): later sets
// are the daemon's own, without trying again.
var waitSetAsUnsupported atomic.Bool

// waitSetFor returns the fifo.ManagerOptions.NewWaitSet of an app of uid:
// nil (the daemon's own) when uid is the daemon's.
func waitSetFor(uid uint32) func() (int, error) {
	if int(uid) == os.Getuid() {
		return nil
	}
	return func() (int, error) {
		if !waitSetAsUnsupported.Load() {
			fd, err := epollCreateAs(uid)
			if !errors.Is(err, unix.EPERM) {
				return fd, err
			}
			waitSetAsUnsupported.Store(true)
		}
		return unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	}
}

// epollCreateAs creates an epoll set (close-on-exec) whose watches the
// kernel charges to uid: the calling goroutine's thread, locked to it,
// takes uid as its real uid for the call and then its own back. The
// effective and saved uids stay the daemon's, so the thread keeps its
// capabilities, and no other goroutine runs on it meanwhile. The uid
// changes with the raw system call: unix.Setresuid changes every thread
// of the process. Should the uid not come back, the thread is never given
// back to the runtime (it ends with the goroutine, or, the process's main
// thread, is parked for good).
func epollCreateAs(uid uint32) (int, error) {
	runtime.LockOSThread()
	own := uintptr(unix.Getuid()) // the thread's real uid
	const keep = ^uintptr(0)      // -1: unchanged
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), keep, keep); e != 0 {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("epoll set for uid %d: setresuid: %w", uid, e)
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, own, keep, keep); e != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("epoll set for uid %d: setresuid back to %d: %w", uid, own, e)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return -1, fmt.Errorf("epoll set for uid %d: %w", uid, err)
	}
	return fd, nil
}
