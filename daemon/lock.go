package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRunDir holds the instance locks (and, by default, the control
// socket).
const DefaultRunDir = "/run/xsessiond"

// ErrInstanceRunning is what Start fails with when another daemon serves
// the same interface of the same netns.
var ErrInstanceRunning = errors.New("another xsessiond serves this interface")

// instanceLock is the flock of one interface: a daemon takes it before it
// touches the interface's XDP program, pins or queues, and holds it until
// it gave them back, so that a second daemon on the same interface fails
// before it breaks the first.
type instanceLock struct {
	path string
	f    *os.File
}

// LockPath returns the lock file of the interface of index ifindex in the
// netns of inode netnsIno, under dir ("" = DefaultRunDir). By index, not
// name: an interface renamed while its daemon runs (which follows it) is
// still its daemon's, and a cleanup or a second run under the new name
// must find the lock held.
func LockPath(dir string, netnsIno uint64, ifindex int) string {
	if dir == "" {
		dir = DefaultRunDir
	}
	return filepath.Join(dir, fmt.Sprintf("iface-%d-%d.lock", netnsIno, ifindex))
}

// lockPatience is how long a daemon or cleanup waits for a lock another
// holds before it takes the holder for a daemon.
const lockPatience = 200 * time.Millisecond

// takeInstanceLock takes the lock at path, waiting patience at most for
// another holder to let it go. The file holds the pid of its owner, for
// the error a second daemon prints. A lock file
// removed by its owner between our open and our flock is retried, so two
// daemons never both hold one.
func takeInstanceLock(path string, patience time.Duration) (*instanceLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("instance lock: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		// A sweep of stale locks (SweepStaleLocks, at every daemon's
		// start and cleanup --stale) holds each free one for a moment:
		// a lock held that briefly is not a daemon's.
		for deadline := time.Now().Add(patience); errors.Is(err, unix.EWOULDBLOCK) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		}
		if err != nil {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				owner := strings.TrimSpace(string(b[:n]))
				if owner == "" {
					owner = "?"
				}
				return nil, fmt.Errorf("%w (pid %s holds %s)", ErrInstanceRunning, owner, path)
			}
			return nil, fmt.Errorf("instance lock %s: %w", path, err)
		}
		// The file we locked must still be the one at path: its owner
		// removes it after its last unlock.
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return &instanceLock{path: path, f: f}, nil
	}
	return nil, fmt.Errorf("instance lock %s: the file keeps changing", path)
}

// LockInstance takes the lock at path as a daemon does, for a command
// that must not run beside a daemon on the interface (cleanup). It fails
// with ErrInstanceRunning while one runs; unlock removes the file.
func LockInstance(path string) (unlock func(), err error) {
	l, err := takeInstanceLock(path, lockPatience)
	if err != nil {
		return nil, err
	}
	return l.release, nil
}

// release removes the lock file, then unlocks: a clean stop leaves no
// file behind.
func (l *instanceLock) release() {
	if l == nil || l.f == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
	l.f = nil
}

// SweepStaleLocks removes the instance lock files under dir (""
// = DefaultRunDir) that no daemon holds: a daemon killed with SIGKILL
// leaves its own (a clean stop removes it), one for each interface it
// served, a container's veth among them. Each is taken first, as a daemon
// takes it, so that a held one is left alone and a daemon starting
// meanwhile keeps its lock (takeInstanceLock retries a file removed under
// it). It returns the files removed.
func SweepStaleLocks(dir string) ([]string, error) {
	if dir == "" {
		dir = DefaultRunDir
	}
	paths, err := filepath.Glob(filepath.Join(dir, "iface-*.lock"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, p := range paths {
		l, err := takeInstanceLock(p, 0) // a held one is a daemon's, or a sweep's: left alone at once
		switch {
		case errors.Is(err, ErrInstanceRunning):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		l.release()
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
