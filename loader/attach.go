package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DefaultPinRoot is where attachments pin their link and maps, under
// <netns>/<ifname>/.
const DefaultPinRoot = BPFFSPath + "/xsessiond"

// Names of the pins in an attachment's directory.
const (
	PinLink        = "link"
	PinListeners   = "listeners"
	PinEstablished = "established"
	PinXSKs        = "xsks"
	PinCounters    = "counters"
	PinPorts       = "ports"
	PinFragments   = "fragments"
)

// mapPins are the map pins Attach replaces and Cleanup removes. A pin
// folder left by a version without one of them is handled the same way:
// a missing pin is skipped.
var mapPins = []string{PinListeners, PinEstablished, PinXSKs, PinCounters, PinPorts, PinFragments}

// Mode is how an XDP program runs on an interface.
type Mode uint8

// Modes.
const (
	ModeAuto    Mode = iota // native, falling back to generic
	ModeNative              // in the driver (XDP_FLAGS_DRV_MODE)
	ModeGeneric             // on the skb path (XDP_FLAGS_SKB_MODE)
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "auto", "native" or "generic".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto", "":
		return ModeAuto, nil
	case "native", "drv", "driver":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("xdp mode %q: %w", s, ErrInvalidOptions)
}

func (m Mode) flags() link.XDPAttachFlags {
	if m == ModeGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// accepts reports whether an attachment running in mode have satisfies m.
// Auto takes either, so a takeover does not retry native mode on a device
// where an earlier run ended up in generic mode.
func (m Mode) accepts(have Mode) bool {
	return m == ModeAuto || m == have
}

func modeOfAttached(attached uint32) (Mode, bool) {
	switch attached {
	case nl.XDP_ATTACHED_DRV:
		return ModeNative, true
	case nl.XDP_ATTACHED_SKB:
		return ModeGeneric, true
	}
	return 0, false
}

// AttachOptions say where and how to attach.
type AttachOptions struct {
	// Interface names the interface; IfIndex may be given instead.
	Interface string
	IfIndex   int
	// Netns is the file of the interface's network namespace, e.g.
	// /run/netns/NAME or /proc/PID/ns/net. Empty means the namespace of the
	// calling thread.
	Netns string
	// NetnsName names the namespace in the pin path. Empty means
	// "netns-<inode>" of the namespace.
	NetnsName string
	// Mode is the XDP mode to use.
	Mode Mode
	// PinRoot is the directory (on a bpf filesystem) under which the link
	// and maps are pinned as <NetnsName>/<ifname>/{link,listeners,
	// established,xsks,counters,ports,fragments}. Empty means DefaultPinRoot, and the bpf
	// filesystem is mounted at /sys/fs/bpf when it is not.
	PinRoot string
	// Replace allows replacing an XDP program that is not xsessiond's.
	// Without it, Attach fails with ErrForeignProgram.
	Replace bool
}

// Takeover says what Attach found on the interface and took over.
type Takeover uint8

// Takeovers.
const (
	TakeoverNone         Takeover = iota // the interface had no XDP program
	TakeoverLinkUpdated                  // a link pinned by an earlier run now runs the new program (no gap)
	TakeoverLinkDetached                 // a link pinned by an earlier run was detached; attached fresh
	TakeoverLink                         // an unpinned xsessiond link was detached; attached fresh
	TakeoverNetlink                      // an xsessiond program attached through netlink was detached
	TakeoverForeign                      // another program was detached (AttachOptions.Replace)
)

func (t Takeover) String() string {
	switch t {
	case TakeoverNone:
		return "none"
	case TakeoverLinkUpdated:
		return "pinned link updated"
	case TakeoverLinkDetached:
		return "pinned link detached"
	case TakeoverLink:
		return "link detached"
	case TakeoverNetlink:
		return "netlink attachment detached"
	case TakeoverForeign:
		return "foreign program detached"
	}
	return fmt.Sprintf("takeover(%d)", uint8(t))
}

// Attachment is the program attached to one interface through a bpf link,
// with the link and the maps pinned under PinDir. Close (or closing the
// Objects) detaches and unpins. Methods are safe for concurrent use.
type Attachment struct {
	objs      *Objects
	ifindex   int
	ifname    string
	netns     string
	dir       string
	mode      Mode
	takeover  Takeover
	nativeErr error
	lnk       link.Link
	pinned    []*ebpf.Map
}

// IfIndex returns the interface's index in its namespace.
func (a *Attachment) IfIndex() int { return a.ifindex }

// Interface returns the interface's name.
func (a *Attachment) Interface() string { return a.ifname }

// NetnsName returns the namespace's name as used in the pin path.
func (a *Attachment) NetnsName() string { return a.netns }

// PinDir returns the directory holding the pinned link and maps.
func (a *Attachment) PinDir() string { return a.dir }

// Mode returns the mode the program runs in: ModeNative or ModeGeneric.
func (a *Attachment) Mode() Mode { return a.mode }

// Takeover says what Attach found and replaced.
func (a *Attachment) Takeover() Takeover { return a.takeover }

// NativeError returns why native mode failed when ModeAuto fell back to
// generic mode, or nil.
func (a *Attachment) NativeError() error { return a.nativeErr }

// Link returns the bpf link. It stays owned by a.
func (a *Attachment) Link() link.Link { return a.lnk }

// Close detaches the program and removes the pins. It is safe to call more
// than once.
func (a *Attachment) Close() error {
	a.objs.mu.Lock()
	defer a.objs.mu.Unlock()
	if a.objs.att != a {
		return nil
	}
	return a.closeLocked()
}

// closeLocked expects a.objs.mu held.
func (a *Attachment) closeLocked() error {
	var errs []error
	if a.lnk != nil && !a.ownsLink() {
		// Another loader took the link over (it runs that loader's
		// program now, and the pins are that loader's): leave both.
		a.pinned = nil
		a.lnk.Close()
		a.lnk = nil
		a.objs.att = nil
		return nil
	}
	for _, m := range a.pinned {
		if err := m.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin map: %w", err))
		}
	}
	a.pinned = nil
	if a.lnk != nil {
		if err := a.lnk.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link: %w", err))
		}
		if err := a.lnk.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
			errs = append(errs, fmt.Errorf("detach from %s: %w", a.ifname, err))
		}
		if err := a.lnk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link: %w", err))
		}
		a.lnk = nil
	}
	removeEmptyDirs(a.dir, 2)
	a.objs.att = nil
	return errors.Join(errs...)
}

// ownsLink reports whether the link still runs this attachment's program.
func (a *Attachment) ownsLink() bool {
	li, err := a.lnk.Info()
	if err != nil {
		return true
	}
	pi, err := a.objs.Program().Info()
	if err != nil {
		return true
	}
	id, ok := pi.ID()
	return !ok || li.Program == id
}

// removeEmptyDirs removes dir and up to levels-1 of its parents while they
// are empty.
func removeEmptyDirs(dir string, levels int) {
	for i := 0; i < levels && dir != ""; i++ {
		if err := os.Remove(dir); err != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

func validPinName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// Attach attaches the program to an interface and pins the link and maps.
// When the interface already runs xsessiond's program (a daemon that was
// killed leaves its pinned link behind), Attach takes it over: it updates a
// link pinned at the same place with the new program, or detaches what is
// there and attaches fresh. Objects attach to at most one interface at a
// time.
func (o *Objects) Attach(opts AttachOptions) (*Attachment, error) {
	if opts.Mode > ModeGeneric {
		return nil, fmt.Errorf("mode %v: %w", opts.Mode, ErrInvalidOptions)
	}
	if opts.Interface == "" && opts.IfIndex <= 0 {
		return nil, fmt.Errorf("no interface: %w", ErrInvalidOptions)
	}
	if opts.NetnsName != "" && !validPinName(opts.NetnsName) {
		return nil, fmt.Errorf("netns name %q: %w", opts.NetnsName, ErrInvalidOptions)
	}
	root := opts.PinRoot
	if root == "" {
		root = DefaultPinRoot
		if err := EnsureBPFFS(""); err != nil {
			return nil, err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if o.att != nil {
		return nil, fmt.Errorf("attach: %w to %s", ErrAttached, o.att.ifname)
	}
	a := &Attachment{objs: o}
	err := inNetns(opts.Netns, func(ino uint64) error {
		return a.attach(opts, root, ino)
	})
	if err != nil {
		o.att = a
		a.closeLocked()
		return nil, err
	}
	o.att = a
	return a, nil
}

// attach runs inside the interface's namespace.
func (a *Attachment) attach(opts AttachOptions, root string, ino uint64) error {
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
	a.ifindex = dev.Attrs().Index
	a.ifname = dev.Attrs().Name
	if opts.IfIndex > 0 && opts.IfIndex != a.ifindex {
		return fmt.Errorf("interface %s has index %d, not %d: %w", a.ifname, a.ifindex, opts.IfIndex, ErrInvalidOptions)
	}
	a.netns = opts.NetnsName
	if a.netns == "" {
		a.netns = fmt.Sprintf("netns-%d", ino)
	}
	if !validPinName(a.ifname) {
		return fmt.Errorf("interface name %q: %w", a.ifname, ErrInvalidOptions)
	}
	a.dir = filepath.Join(root, a.netns, a.ifname)
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}

	prog := a.objs.Program()
	linkPin := filepath.Join(a.dir, PinLink)
	adopted := false
	if old, err := link.LoadPinnedLink(linkPin, nil); err == nil {
		adopted = a.takeOverPinned(old, dev, prog, opts.Mode)
	} else if !errors.Is(err, os.ErrNotExist) {
		if err := os.Remove(linkPin); err != nil {
			return fmt.Errorf("remove unusable pin %s: %w", linkPin, err)
		}
	}
	for _, name := range mapPins {
		if err := os.Remove(filepath.Join(a.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale pin: %w", err)
		}
	}
	if !adopted {
		// Read the device again: detaching a stale link changed it.
		if dev, err = netlink.LinkByIndex(a.ifindex); err != nil {
			return fmt.Errorf("find interface %s: %w", a.ifname, err)
		}
		if err := a.clearDevice(dev, opts.Replace); err != nil {
			return err
		}
		if err := a.attachFresh(prog, opts.Mode); err != nil {
			return err
		}
		if err := a.lnk.Pin(linkPin); err != nil {
			return fmt.Errorf("pin link: %w", err)
		}
	}
	maps := a.objs.objs.xsessionMaps
	for _, p := range []struct {
		name string
		m    *ebpf.Map
	}{{PinListeners, maps.Listeners}, {PinEstablished, maps.Established}, {PinXSKs, maps.Xsks}, {PinCounters, maps.Counters}, {PinPorts, maps.Ports}, {PinFragments, maps.Fragments}} {
		if err := p.m.Pin(filepath.Join(a.dir, p.name)); err != nil {
			return fmt.Errorf("pin map %s: %w", p.name, err)
		}
		a.pinned = append(a.pinned, p.m)
	}
	return nil
}

// takeOverPinned handles a link pinned by an earlier run at this interface's
// pin path. When it is this interface's XDP link in an acceptable mode it is
// updated to run prog and kept (true); otherwise it is detached and released
// (false).
func (a *Attachment) takeOverPinned(old link.Link, dev netlink.Link, prog *ebpf.Program, want Mode) bool {
	info, err := old.Info()
	cur := dev.Attrs().Xdp
	if err == nil && info.Type == link.XDPType && info.XDP() != nil &&
		int(info.XDP().Ifindex) == a.ifindex && cur != nil && cur.Attached &&
		ebpf.ProgramID(cur.ProgId) == info.Program {
		if mode, ok := modeOfAttached(cur.AttachMode); ok && want.accepts(mode) {
			if err := old.Update(prog); err == nil {
				a.lnk = old
				a.mode = mode
				a.takeover = TakeoverLinkUpdated
				return true
			}
		}
	}
	// Best effort: the link may already be defunct (its device gone).
	old.Unpin()
	old.Detach()
	old.Close()
	a.takeover = TakeoverLinkDetached
	return false
}

// clearDevice removes an XDP program attached to dev by something other
// than a link pinned at this interface's pin path: another (unpinned or
// elsewhere pinned) link, or a netlink attachment. A program that is not
// xsessiond's is removed only when replace is set.
func (a *Attachment) clearDevice(dev netlink.Link, replace bool) error {
	x := dev.Attrs().Xdp
	if x == nil || !x.Attached {
		return nil
	}
	id := ebpf.ProgramID(x.ProgId)
	ours := false
	if id != 0 {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			if info, err := p.Info(); err == nil && info.Name == ProgramName {
				ours = true
			}
			p.Close()
		}
	}
	if !ours && !replace {
		return fmt.Errorf("%s runs xdp program id %d (attach mode %d), not xsessiond's: %w (xsessiond does not replace another's program: "+
			"serve another interface, or detach it first if it is no longer wanted, with its own tool or `ip link set dev %s xdp off`; "+
			"`bpftool prog show id %d` says what it is)", a.ifname, id, x.AttachMode, ErrForeignProgram, a.ifname, id)
	}
	kind := TakeoverNetlink
	if !ours {
		kind = TakeoverForeign
	}
	// A link holding the program: find it by program id and ifindex.
	if id != 0 {
		var it link.Iterator
		defer it.Close()
		for it.Next() {
			info, err := it.Link.Info()
			if err != nil || info.Type != link.XDPType || info.Program != id || info.XDP() == nil || int(info.XDP().Ifindex) != a.ifindex {
				continue
			}
			if err := it.Link.Detach(); err != nil {
				return fmt.Errorf("detach link %d from %s: %w", it.ID, a.ifname, err)
			}
			if a.takeover == TakeoverNone {
				a.takeover = TakeoverLink
				if !ours {
					a.takeover = TakeoverForeign
				}
			}
			return nil
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("list bpf links: %w", err)
		}
	}
	var flags []int
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		flags = []int{nl.XDP_FLAGS_DRV_MODE}
	case nl.XDP_ATTACHED_SKB:
		flags = []int{nl.XDP_FLAGS_SKB_MODE}
	default: // both modes at once, or offloaded
		flags = []int{nl.XDP_FLAGS_DRV_MODE, nl.XDP_FLAGS_SKB_MODE}
	}
	var errs []error
	for _, f := range flags {
		if err := netlink.LinkSetXdpFdWithFlags(dev, -1, f); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(flags) {
		return fmt.Errorf("detach xdp program %d from %s: %w", id, a.ifname, errors.Join(errs...))
	}
	if a.takeover == TakeoverNone {
		a.takeover = kind
	}
	return nil
}

// attachFresh creates the link in the requested mode.
func (a *Attachment) attachFresh(prog *ebpf.Program, want Mode) error {
	modes := []Mode{want}
	if want == ModeAuto {
		modes = []Mode{ModeNative, ModeGeneric}
	}
	var last error
	for _, m := range modes {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: a.ifindex, Flags: m.flags()})
		if err == nil {
			a.lnk = l
			a.mode = m
			return nil
		}
		if m == ModeNative && want == ModeAuto {
			a.nativeErr = err
		}
		last = fmt.Errorf("attach xdp to %s in %v mode: %w", a.ifname, m, err)
	}
	return last
}
