package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind"
)

// openNetns opens a handle on the network namespace of cfg: NetnsPath when
// given, else the nsbind namespace found by inode under /run/netns (the
// NetnsName entry first) or as the current namespace. nil Netns means the
// current namespace.
func openNetns(path, name string, ns *nsbind.Namespace) (netns.NsHandle, error) {
	if path != "" {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return -1, fmt.Errorf("open netns %s: %w", path, err)
		}
		return h, nil
	}
	if ns == nil {
		h, err := netns.Get()
		if err != nil {
			return -1, fmt.Errorf("open current netns: %w", err)
		}
		return h, nil
	}
	want := ns.Inode()
	var cands []string
	if name != "" {
		cands = append(cands, filepath.Join(nsbind.NamedDir, name))
	}
	if ents, err := os.ReadDir(nsbind.NamedDir); err == nil {
		for _, e := range ents {
			cands = append(cands, filepath.Join(nsbind.NamedDir, e.Name()))
		}
	}
	cands = append(cands, "/proc/self/ns/net")
	for _, c := range cands {
		var st unix.Stat_t
		if unix.Stat(c, &st) != nil || st.Ino != want {
			continue
		}
		h, err := netns.GetFromPath(c)
		if err != nil {
			continue
		}
		// The handle must name the same namespace as the path did.
		if err := unix.Fstat(int(h), &st); err == nil && st.Ino == want {
			return h, nil
		}
		h.Close()
	}
	return -1, fmt.Errorf("find netns %v (inode %d): %w", ns, want, ErrNetns)
}

// doIn runs fn on a locked OS thread inside the namespace h and restores
// the thread. A thread that cannot be restored is left locked, so that the
// runtime ends it with the goroutine instead of reusing it.
func doIn(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The reply is sent once the original namespace's descriptor
		// is closed, so that a caller counting its descriptors after
		// doIn returns does not see it.
		errc <- doInLocked(h, fn)
	}()
	return <-errc
}

// doInLocked is doIn on the calling goroutine, which it locks to its
// thread; it unlocks it unless the thread could not be restored.
func doInLocked(h netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	err = fn()
	if rerr := netns.Set(orig); rerr != nil {
		return err // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return err
}
