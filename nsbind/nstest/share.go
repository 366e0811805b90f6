package nstest

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

var (
	shareOnce sync.Once
	shareErr  error
)

// shareNetnsDir makes netnsDir a shared mount point of its own, once per
// process and before its first namespace is bound there, as `ip netns
// add` does before its own. Were it not one, the first `ip netns add` on
// the machine (a test's, an operator's, while a rig or the demo runs)
// would bind the directory over itself: the namespaces bound in it before
// would be hidden under the new mount, to be neither opened by name nor
// removed (the names left as plain files). Processes taking turns at it
// (packages tested in parallel) hold an exclusive flock of the directory,
// so that only the first binds it.
func shareNetnsDir() error {
	shareOnce.Do(func() { shareErr = shareNetnsDirNow() })
	return shareErr
}

func shareNetnsDirNow() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	fd, err := unix.Open(netnsDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", netnsDir, err)
	}
	defer unix.Flock(fd, unix.LOCK_UN)
	for bound := false; ; bound = true {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: not a mount point yet.
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount point: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on itself: %w", netnsDir, err)
		}
	}
}
