package nsbind

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NamedDir is where named network namespaces are bound (ip netns).
const NamedDir = "/run/netns"

// requestTimeout bounds one netlink request of a Namespace.
const requestTimeout = 5 * time.Second

// Namespace is an open Linux network namespace: a file descriptor on it and
// a netlink (rtnetlink) handle whose socket lives inside it. Its methods
// query the kernel directly; for a cached, cheap view of interfaces and
// addresses use a View. Methods are safe for concurrent use; after Close
// they return ErrClosed.
type Namespace struct {
	desc string // how it was opened, for messages
	fib  FIBID
	ino  uint64

	mu sync.RWMutex // guards ns, h and udp6: users hold it shared, Close exclusive
	ns netns.NsHandle
	h  *netlink.Handle

	sockMu sync.Mutex // guards the creation of udp6 and nlGet; lock order: mu, then sockMu, then getMu
	udp6   int        // IPv6 UDP socket inside the namespace (ResolveNeighbour); -1 until first used
	// nlGet is a rtnetlink socket inside the namespace for requests of one
	// neighbour entry (neighGet); -1 until first used. getMu serializes
	// its requests.
	nlGet int
	getMu sync.Mutex
}

// OpenNamed opens the namespace bound at /run/netns/NAME (as ip netns add
// makes them). The name is a single path element.
func OpenNamed(name string) (*Namespace, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return nil, fmt.Errorf("open namespace %q: %w: not a valid name", name, ErrNoNamespace)
	}
	return openPath(NamedDir+"/"+name, "netns "+name)
}

// OpenPath opens the network namespace at path: /proc/PID/ns/net, a bind
// mount of one, or any other nsfs file of type net.
func OpenPath(path string) (*Namespace, error) {
	if path == "" || strings.ContainsRune(path, 0) {
		return nil, fmt.Errorf("open namespace %q: %w: empty path", path, ErrNoNamespace)
	}
	return openPath(path, path)
}

// OpenPID opens the network namespace of process pid.
func OpenPID(pid int) (*Namespace, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("open namespace of pid %d: %w", pid, ErrNoNamespace)
	}
	p := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	return openPath(p, p)
}

// FIBOfPID returns the FIB id of process pid's network namespace (the
// inode of /proc/PID/ns/net) without opening a Namespace on it.
func FIBOfPID(pid int) (FIBID, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("namespace of pid %d: %w", pid, ErrNoNamespace)
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("namespace of pid %d: %w: %w", pid, ErrNoNamespace, err)
	}
	defer unix.Close(fd)
	fib, _, err := fibOfFD(fd)
	if err != nil {
		return 0, fmt.Errorf("namespace of pid %d: %w", pid, err)
	}
	return fib, nil
}

// OpenCurrent opens the network namespace of the calling goroutine's
// thread, which is the process's own unless the caller moved its locked
// thread elsewhere.
func OpenCurrent() (*Namespace, error) {
	runtime.LockOSThread()
	p := "/proc/thread-self/ns/net"
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("open current namespace: %w: %w", ErrNoNamespace, err)
	}
	return fromFD(fd, "current netns")
}

func openPath(path, desc string) (*Namespace, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("open namespace %s: %w", desc, ErrNoNamespace)
		}
		return nil, fmt.Errorf("open namespace %s: %w", desc, err)
	}
	return fromFD(fd, desc)
}

// fromFD takes ownership of fd.
func fromFD(fd int, desc string) (*Namespace, error) {
	fib, ino, err := fibOfFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open namespace %s: %w", desc, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open namespace %s: netlink: %w", desc, err)
	}
	if err := h.SetSocketTimeout(requestTimeout); err != nil {
		h.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("open namespace %s: netlink timeout: %w", desc, err)
	}
	n := &Namespace{desc: desc, fib: fib, ino: ino, ns: netns.NsHandle(fd), h: h, udp6: -1, nlGet: -1}
	// Opened now rather than at the first neighbour read, so that the
	// descriptor is the Namespace's from its start; one that fails here
	// is tried again then, and the reads fall back to a dump meanwhile.
	_, _ = n.getSocket()
	return n, nil
}

// fibOfFD checks that fd is a network namespace and derives its FIB id.
//
// The FIB id of a namespace is the inode number of its nsfs file (what
// ls -iL /proc/PID/ns/net and the "net:[N]" link show). The kernel gives
// every namespace a unique 32-bit inode number for as long as it lives, so
// two handles on one namespace (by name, by path, by pid) give the same id
// and two live namespaces never share one. A number may be reused after its
// namespace is destroyed. Zero is never an id. IPv4 and IPv6 of a namespace
// share its id: the family is carried by the address itself.
func fibOfFD(fd int) (FIBID, uint64, error) {
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: not a namespace file: %w", ErrNoNamespace, err)
	}
	if t != unix.CLONE_NEWNET {
		return 0, 0, fmt.Errorf("%w: a namespace of another type", ErrNoNamespace)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("stat: %w", err)
	}
	if st.Ino == 0 || st.Ino > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: inode %d does not fit a FIB id", ErrNoNamespace, st.Ino)
	}
	return FIBID(st.Ino), st.Ino, nil
}

// String describes how the namespace was opened.
func (n *Namespace) String() string { return n.desc }

// FIB returns the namespace's FIB id (see the package doc for how it is
// derived). It stays valid after Close.
func (n *Namespace) FIB() FIBID { return n.fib }

// Inode returns the inode number of the namespace's nsfs file.
func (n *Namespace) Inode() uint64 { return n.ino }

// Close closes the netlink handle and the namespace descriptor. It is safe
// to call more than once; Views made from the namespace keep working.
func (n *Namespace) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h == nil {
		return nil
	}
	n.h.Close()
	n.h = nil
	if n.udp6 >= 0 {
		unix.Close(n.udp6)
		n.udp6 = -1
	}
	if n.nlGet >= 0 {
		unix.Close(n.nlGet)
		n.nlGet = -1
	}
	err := n.ns.Close()
	n.ns = -1
	if err != nil {
		return fmt.Errorf("close namespace %s: %w", n.desc, err)
	}
	return nil
}

// handle runs fn with the netlink handle held open.
func (n *Namespace) handle(verb string, fn func(h *netlink.Handle) error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.h == nil {
		return fmt.Errorf("%s: %w", verb, ErrClosed)
	}
	return fn(n.h)
}

// dupFD returns a new descriptor on the namespace for the caller to own.
func (n *Namespace) dupFD() (int, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.h == nil {
		return -1, ErrClosed
	}
	return unix.FcntlInt(uintptr(n.ns), unix.F_DUPFD_CLOEXEC, 0)
}

// Interface is one network interface of a namespace as the kernel reports
// it.
type Interface struct {
	Index int
	Name  string
	// Type is the link kind (IFLA_INFO_KIND) such as "veth", "bridge",
	// "dummy", or "device" for a driver that reports no kind (physical
	// NICs, virtio-net, lo).
	Type string
	// Encap is the link layer, as netlink names the device's ARPHRD type:
	// "ether" for Ethernet (NICs, veth, bridges), "loopback", "none" for
	// layer-3 devices (tun, WireGuard).
	Encap    string
	MAC      net.HardwareAddr
	MTU      int
	Up       bool // administratively up (IFF_UP)
	Running  bool // operationally up (IFF_RUNNING: carrier, not dormant)
	RxQueues int  // IFLA_NUM_RX_QUEUES
	TxQueues int  // IFLA_NUM_TX_QUEUES
	// Addrs are the interface's usable IPv4 and IPv6 addresses (IPv6 ones
	// still in duplicate address detection are left out) with their prefix
	// lengths, IPv4 first, each family in ascending order.
	Addrs []netip.Prefix
}

// Usable reports whether the interface is both up and running.
func (i Interface) Usable() bool { return i.Up && i.Running }

// clone returns a deep copy.
func (i Interface) clone() Interface {
	i.MAC = slices.Clone(i.MAC)
	i.Addrs = slices.Clone(i.Addrs)
	return i
}

// interfaceOf converts a netlink link, without addresses.
func interfaceOf(l netlink.Link) Interface {
	a := l.Attrs()
	return Interface{
		Index:    a.Index,
		Name:     a.Name,
		Type:     l.Type(),
		Encap:    a.EncapType,
		MAC:      slices.Clone(a.HardwareAddr),
		MTU:      a.MTU,
		Up:       a.RawFlags&unix.IFF_UP != 0,
		Running:  a.RawFlags&unix.IFF_RUNNING != 0,
		RxQueues: a.NumRxQueues,
		TxQueues: a.NumTxQueues,
	}
}

// usableAddr reports whether an address with these IFA_F_* flags is one
// the kernel lets sockets use: not tentative (IPv6 duplicate address
// detection still running, unless optimistic) and not DAD-failed. The
// kernel announces an IPv6 address only once its DAD completes, so leaving
// tentative ones out keeps dumps and notifications in agreement.
func usableAddr(flags uint32) bool {
	if flags&unix.IFA_F_DADFAILED != 0 {
		return false
	}
	return flags&unix.IFA_F_TENTATIVE == 0 || flags&unix.IFA_F_OPTIMISTIC != 0
}

// prefixOf converts an interface address; ok is false for anything that is
// not a valid IPv4 or IPv6 address with a sane prefix length.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	switch {
	case bits == 0: // no or non-canonical mask: a host address
		ones = a.BitLen()
	case bits != a.BitLen(): // a mask of the other family
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
}

// listAddrs dumps the namespace's addresses, retrying a dump the kernel
// reports as interrupted by a concurrent change.
func listAddrs(h *netlink.Handle, l netlink.Link) ([]netlink.Addr, error) {
	var err error
	for range 5 {
		var as []netlink.Addr
		as, err = h.AddrList(l, netlink.FAMILY_ALL)
		if err == nil {
			return as, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, err
}

func listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var ls []netlink.Link
		ls, err = h.LinkList()
		if err == nil {
			return ls, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, err
}

// Interfaces lists the namespace's interfaces with their addresses, in
// ifindex order.
func (n *Namespace) Interfaces() ([]Interface, error) {
	var out []Interface
	err := n.handle("list interfaces", func(h *netlink.Handle) error {
		ls, err := listLinks(h)
		if err != nil {
			return fmt.Errorf("list interfaces of %s: %w", n.desc, err)
		}
		as, err := listAddrs(h, nil)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", n.desc, err)
		}
		byIndex := make(map[int]int, len(ls))
		for _, l := range ls {
			byIndex[l.Attrs().Index] = len(out)
			out = append(out, interfaceOf(l))
		}
		for _, a := range as {
			i, ok := byIndex[a.LinkIndex]
			if !ok {
				continue
			}
			if p, ok := prefixOf(a.IPNet); ok && usableAddr(uint32(a.Flags)) {
				out[i].Addrs = append(out[i].Addrs, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		sortPrefixes(out[i].Addrs)
	}
	slices.SortFunc(out, func(x, y Interface) int { return x.Index - y.Index })
	return out, nil
}

// InterfaceByName returns the interface called name.
func (n *Namespace) InterfaceByName(name string) (Interface, error) {
	verb := "interface " + strconv.Quote(name) + " in " + n.desc
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/\x00") {
		return Interface{}, fmt.Errorf("%s: %w", verb, ErrNoInterface)
	}
	return n.interfaceBy(verb, func(h *netlink.Handle) (netlink.Link, error) { return h.LinkByName(name) })
}

// InterfaceByIndex returns the interface with ifindex index.
func (n *Namespace) InterfaceByIndex(index int) (Interface, error) {
	verb := "interface " + strconv.Itoa(index) + " in " + n.desc
	if index <= 0 || index > math.MaxInt32 {
		return Interface{}, fmt.Errorf("%s: %w", verb, ErrNoInterface)
	}
	return n.interfaceBy(verb, func(h *netlink.Handle) (netlink.Link, error) { return h.LinkByIndex(index) })
}

func (n *Namespace) interfaceBy(verb string, get func(*netlink.Handle) (netlink.Link, error)) (Interface, error) {
	var out Interface
	err := n.handle(verb, func(h *netlink.Handle) error {
		l, err := get(h)
		if err != nil {
			return wrapNoInterface(verb, err)
		}
		out = interfaceOf(l)
		as, err := listAddrs(h, l)
		if err != nil {
			return fmt.Errorf("%s: list addresses: %w", verb, err)
		}
		for _, a := range as {
			if p, ok := prefixOf(a.IPNet); ok && usableAddr(uint32(a.Flags)) {
				out.Addrs = append(out.Addrs, p)
			}
		}
		sortPrefixes(out.Addrs)
		return nil
	})
	return out, err
}
