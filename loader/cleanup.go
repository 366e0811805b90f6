package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
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
		linkPin := filepath.Join(a.dir, PinLink)
		if old, err := link.LoadPinnedLink(linkPin, nil); err == nil {
			rep.LinkPinned = true
			if err := old.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin link: %w", err))
			}
			old.Detach() // best effort: the device may be gone
			old.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			if err := os.Remove(linkPin); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove unusable pin %s: %w", linkPin, err))
			}
		}
		for _, name := range mapPins {
			err := os.Remove(filepath.Join(a.dir, name))
			switch {
			case err == nil:
				rep.MapPins++
			case !errors.Is(err, os.ErrNotExist):
				errs = append(errs, fmt.Errorf("remove pin: %w", err))
			}
		}
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
