package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CleanupReport says what Cleanup found and removed.
type CleanupReport struct {
	PinDir     string // the interface's pin folder
	LinkPinned bool   // a pinned link was found, unpinned and detached
	MapPins    int    // map pins removed
	Detached   bool   // an xsessiond program attached otherwise was detached
}

// Cleanup removes what a daemon that died without stopping (SIGKILL, a
// crash) left on an interface: its pinned link, which keeps the program
// attached, the map pins, the empty pin folders, and an xsessiond program
// still attached by other means. A program that is not xsessiond's is left
// in place (ErrForeignProgram). opts names the interface as for Attach;
// Mode and Replace are not read. The caller makes sure no daemon runs on
// the interface.
func Cleanup(opts AttachOptions) (CleanupReport, error) {
	var rep CleanupReport
	if opts.Interface == "" && opts.IfIndex <= 0 {
		return rep, fmt.Errorf("cleanup: no interface: %w", ErrInvalidOptions)
	}
	if opts.NetnsName != "" && !validPinName(opts.NetnsName) {
		return rep, fmt.Errorf("cleanup: netns name %q: %w", opts.NetnsName, ErrInvalidOptions)
	}
	root := opts.PinRoot
	if root == "" {
		root = DefaultPinRoot
	}
	err := inNetns(opts.Netns, func(ino uint64) error {
		var dev netlink.Link
		var err error
		if opts.Interface != "" {
			dev, err = netlink.LinkByName(opts.Interface)
		} else {
			dev, err = netlink.LinkByIndex(opts.IfIndex)
		}
		if err != nil {
			return fmt.Errorf("find interface %q (index %d): %w", opts.Interface, opts.IfIndex, err)
		}
		a := &Attachment{ifindex: dev.Attrs().Index, ifname: dev.Attrs().Name, netns: opts.NetnsName}
		if a.netns == "" {
			a.netns = fmt.Sprintf("netns-%d", ino)
		}
		if !validPinName(a.ifname) {
			return fmt.Errorf("interface name %q: %w", a.ifname, ErrInvalidOptions)
		}
		a.dir = filepath.Join(root, a.netns, a.ifname)
		rep.PinDir = a.dir
		var errs []error
		rep.LinkPinned, rep.MapPins, errs = removePins(a.dir, true)
		removeEmptyDirs(a.dir, 2)
		// Read the device again: unpinning the link detached its program.
		if dev, err = netlink.LinkByIndex(a.ifindex); err != nil {
			return fmt.Errorf("find interface %s: %w", a.ifname, err)
		}
		if err := a.clearDevice(dev, false); err != nil {
			errs = append(errs, err)
		} else if a.takeover != TakeoverNone {
			rep.Detached = true
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return rep, fmt.Errorf("cleanup: %w", err)
	}
	return rep, nil
}

// removePins unpins what a pin folder holds: the link (with detach, also
// detached, best effort: its device may be gone) and the map pins. It says
// whether there was a link and how many map pins it removed. Unpinned and
// not detached, a link stays as long as a process holds it, and goes, its
// program detached, with the last.
func removePins(dir string, detach bool) (linked bool, maps int, errs []error) {
	linkPin := filepath.Join(dir, PinLink)
	if old, err := link.LoadPinnedLink(linkPin, nil); err == nil {
		linked = true
		if err := old.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link: %w", err))
		}
		if detach {
			old.Detach()
		}
		old.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		if err := os.Remove(linkPin); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove unusable pin %s: %w", linkPin, err))
		}
	}
	for _, name := range mapPins {
		err := os.Remove(filepath.Join(dir, name))
		switch {
		case err == nil:
			maps++
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("remove pin: %w", err))
		}
	}
	return linked, maps, errs
}

// stillAttached reports whether the link pinned in dir still holds its
// program on an interface: the kernel forgets the interface of an XDP link
// when the interface goes, so one that names an interface is on one that
// exists, perhaps under another name than its folder's (renamed).
func stillAttached(dir string) bool {
	l, err := link.LoadPinnedLink(filepath.Join(dir, PinLink), nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	x := info.XDP()
	return x != nil && x.Ifindex != 0
}

// StaleReport says what SweepStale removed.
type StaleReport struct {
	Dirs     []string // the pin folders removed, one an interface
	Links    int      // pinned links among them, unpinned (their programs freed)
	MapPins  int      // map pins removed
	Examined int      // interface pin folders looked at
}

// SweepStale removes, under root (DefaultPinRoot when ""), the pins of
// every interface that no longer exists: those of a named network
// namespace that is gone (no /run/netns/NAME), of an unnamed one
// (netns-INODE) that no process and no bind mount holds any more, and of an
// interface gone from the caller's namespace or from a named one that
// still exists. A daemon killed in a namespace that was deleted after it
// leaves such pins, which keep its program and maps in the kernel until
// they are removed. The links are unpinned, never detached: a daemon still
// running on its interface in a namespace whose name was deleted (the
// daemon holds it) keeps its program attached through its own link, and
// a dead daemon's goes with its pin. A folder whose interface was renamed
// (a pinned link still attached) is kept.
func SweepStale(root string) (StaleReport, error) {
	var rep StaleReport
	if root == "" {
		root = DefaultPinRoot
	}
	nss, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	live := liveNetns()
	var current uint64
	_ = inNetns("", func(ino uint64) error { current = ino; return nil })
	var errs []error
	for _, ns := range nss {
		if !ns.IsDir() {
			continue
		}
		nsDir := filepath.Join(root, ns.Name())
		ifaces, err := os.ReadDir(nsDir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// exists says whether interface name is there; nil: the namespace
		// is alive but cannot be looked into, so its interfaces stay.
		var exists func(name string) bool
		var ino uint64
		alive := false // the namespace is there: a folder of no interface may be a renamed one's
		if _, err := fmt.Sscanf(ns.Name(), "netns-%d", &ino); err == nil {
			switch {
			case !live[ino]:
				exists = func(string) bool { return false }
			case ino == current:
				exists = func(name string) bool { _, err := netlink.LinkByName(name); return !notFound(err) }
				alive = true
			}
		} else {
			path := filepath.Join("/run/netns", ns.Name())
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				exists = func(string) bool { return false }
			} else {
				exists = func(name string) bool {
					return !notFound(inNetns(path, func(uint64) error { _, err := netlink.LinkByName(name); return err }))
				}
				alive = true
			}
		}
		for _, ifc := range ifaces {
			if !ifc.IsDir() {
				continue
			}
			rep.Examined++
			dir := filepath.Join(nsDir, ifc.Name())
			if exists == nil || exists(ifc.Name()) || (alive && stillAttached(dir)) {
				continue
			}
			linked, maps, perrs := removePins(dir, false)
			errs = append(errs, perrs...)
			if linked {
				rep.Links++
			}
			rep.MapPins += maps
			removeEmptyDirs(dir, 2)
			rep.Dirs = append(rep.Dirs, dir)
		}
	}
	return rep, errors.Join(errs...)
}

// notFound says err is netlink's "no such link", and nothing else: an
// interface that could not be looked up for another reason stays.
func notFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// liveNetns are the inodes of the network namespaces some process is in
// or a bind mount under /run/netns holds.
func liveNetns() map[uint64]bool {
	live := map[uint64]bool{}
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil {
			live[st.Ino] = true
		}
	}
	if names, err := os.ReadDir("/run/netns"); err == nil {
		for _, n := range names {
			add(filepath.Join("/run/netns", n.Name()))
		}
	}
	if procs, err := os.ReadDir("/proc"); err == nil {
		for _, p := range procs {
			if p.Name()[0] >= '0' && p.Name()[0] <= '9' {
				add(filepath.Join("/proc", p.Name(), "ns", "net"))
			}
		}
	}
	return live
}
