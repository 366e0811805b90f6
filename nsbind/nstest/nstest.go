// Package nstest is xsessiond's test rig: hosts made of Linux network
// namespaces joined by veth pairs, built with netlink alone, and the helper
// that decides whether a privileged test runs, skips or fails. A rig can
// instead join its hosts through a relay that loses, delays and reorders
// frames as netem would (Options.Relay, Pair.Impair).
//
// Every rig is torn down in t.Cleanup, also when the test fails or panics.
// Names are unique per process and per rig, so packages can be tested in
// parallel. A Host's Do runs code inside its namespace on a locked OS thread;
// Host values are safe for concurrent use.
package nstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PrivilegedEnv is the environment variable that, set to "require", turns
// the skip of a privileged test into a failure. CI sets it.
const PrivilegedEnv = "XSESSIOND_PRIVILEGED"

// RequirePrivileged skips t when the process cannot create network
// namespaces and load bpf programs, saying why, and fails it instead when
// XSESSIOND_PRIVILEGED=require.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	reason := privilegeProblem()
	if reason == "" {
		return
	}
	if os.Getenv(PrivilegedEnv) == "require" {
		t.Fatalf("privileged test cannot run (%s) and %s=require: run the tests as root, e.g. go test -exec sudo ./...", reason, PrivilegedEnv)
	}
	t.Skipf("skipping privileged test: %s (run with go test -exec sudo)", reason)
}

func privilegeProblem() string {
	if runtime.GOOS != "linux" {
		return "needs Linux, have " + runtime.GOOS
	}
	var hdr unix.CapUserHeader
	var data [2]unix.CapUserData
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "cannot read capabilities: " + err.Error()
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_BPF, "CAP_BPF"}} {
		if !has(c.bit) {
			return "missing " + c.name
		}
	}
	return ""
}

// Options shape a rig.
type Options struct {
	// Queues is the number of rx and tx queues of each veth end; 0 means 1.
	Queues int
	// MTU of both veth ends; 0 means 1500.
	MTU int
	// Relay joins A and B through a third namespace instead of one veth
	// pair: A's veth end is peered with m-a there, B's with m-b, and a
	// relay in the test process carries every frame between the two, as
	// a wire would, until Pair.Impair makes it lose, delay or reorder
	// them (netem's job, done in user space for kernels built without
	// it). A and B look the same either way.
	Relay bool
}

// Host is one end of a rig: a network namespace with one veth end in it.
type Host struct {
	Name    string         // the network namespace's name (under /run/netns)
	NS      netns.NsHandle // an open handle on the namespace
	Link    string         // the veth end's name inside the namespace
	IfIndex int            // the veth end's ifindex inside the namespace
	MAC     net.HardwareAddr
	IPv4    netip.Addr // 10.77.0.1 on A, 10.77.0.2 on B (/24)
	IPv6    netip.Addr // fd77::1 on A, fd77::2 on B (/64), added without DAD
}

// Pair is two hosts joined by a veth pair, or by two and a relay
// (Options.Relay).
type Pair struct {
	A, B *Host

	mid     netns.NsHandle // the relay's namespace, -1 without one
	midName string
	relay   *relay
}

// Prefix lengths of the rig's addresses.
const (
	PrefixLen4 = 24
	PrefixLen6 = 64
)

var rigSeq atomic.Uint32

// NewPair builds two hosts joined by a veth pair and registers their removal
// with t.Cleanup, which fails the test when a namespace cannot be deleted.
// It calls RequirePrivileged first.
func NewPair(t testing.TB, opts Options) *Pair {
	t.Helper()
	RequirePrivileged(t)
	p, err := newPair(opts)
	if p != nil {
		t.Cleanup(func() {
			// A namespace left behind is a leak the next run trips on.
			if err := p.Close(); err != nil {
				t.Errorf("nstest: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	return p
}

// NewPairNoTest builds a rig outside a test (the quickstart uses it). The
// caller must Close it.
func NewPairNoTest(opts Options) (*Pair, error) {
	p, err := newPair(opts)
	if err != nil {
		if p != nil {
			p.Close()
		}
		return nil, err
	}
	return p, nil
}

func newPair(opts Options) (*Pair, error) {
	if opts.Queues <= 0 {
		opts.Queues = 1
	}
	if opts.MTU <= 0 {
		opts.MTU = 1500
	}
	reapStale()
	id := freeRigID()
	p := &Pair{
		A:   &Host{Name: id + "-a", Link: "veth-a", IPv4: netip.MustParseAddr("10.77.0.1"), IPv6: netip.MustParseAddr("fd77::1"), NS: -1},
		B:   &Host{Name: id + "-b", Link: "veth-b", IPv4: netip.MustParseAddr("10.77.0.2"), IPv6: netip.MustParseAddr("fd77::2"), NS: -1},
		mid: -1,
	}
	for _, h := range []*Host{p.A, p.B} {
		ns, err := newNamedNS(h.Name)
		if err != nil {
			return p, fmt.Errorf("create netns %s: %w", h.Name, err)
		}
		h.NS = ns
	}
	if !opts.Relay {
		if err := addVeth(p.A.NS, p.A.Link, p.B.NS, p.B.Link, opts); err != nil {
			return p, err
		}
	} else {
		p.midName = id + "-m"
		ns, err := newNamedNS(p.midName)
		if err != nil {
			return p, fmt.Errorf("create netns %s: %w", p.midName, err)
		}
		p.mid = ns
		if err := addVeth(p.A.NS, p.A.Link, p.mid, "m-a", opts); err != nil {
			return p, err
		}
		if err := addVeth(p.mid, "m-b", p.B.NS, p.B.Link, opts); err != nil {
			return p, err
		}
		ifA, ifB, err := setupMid(p.mid, p.midName)
		if err != nil {
			return p, err
		}
		if p.relay, err = startRelay(p.mid, ifA, ifB); err != nil {
			return p, err
		}
	}
	for _, h := range []*Host{p.A, p.B} {
		if err := h.setup(); err != nil {
			return p, err
		}
	}
	return p, nil
}

// addVeth creates the veth pair name (in ns) and peer (in peerNS).
func addVeth(ns netns.NsHandle, name string, peerNS netns.NsHandle, peer string, opts Options) error {
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer nh.Close()
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: name, MTU: opts.MTU, TxQLen: 1000,
			NumTxQueues: opts.Queues, NumRxQueues: opts.Queues,
		},
		PeerName:        peer,
		PeerNamespace:   netlink.NsFd(int(peerNS)),
		PeerNumTxQueues: uint32(opts.Queues),
		PeerNumRxQueues: uint32(opts.Queues),
		PeerMTU:         uint32(opts.MTU),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth pair %s/%s: %w", name, peer, err)
	}
	return nil
}

// setupMid brings the relay namespace's two veth ends up, without IPv6 so
// that the namespace sends nothing of its own, and returns their ifindexes.
func setupMid(ns netns.NsHandle, name string) (ifA, ifB int, err error) {
	err = DoIn(ns, func() error {
		for _, f := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0); err != nil {
				return fmt.Errorf("%s: disable IPv6: %w", name, err)
			}
		}
		for i, l := range []string{"lo", "m-a", "m-b"} {
			link, err := netlink.LinkByName(l)
			if err != nil {
				return fmt.Errorf("%s: find %s: %w", name, l, err)
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return fmt.Errorf("%s: set %s up: %w", name, l, err)
			}
			switch i {
			case 1:
				ifA = link.Attrs().Index
			case 2:
				ifB = link.Attrs().Index
			}
		}
		return nil
	})
	return ifA, ifB, err
}

func (h *Host) setup() error {
	nh, err := netlink.NewHandleAt(h.NS)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", h.Name, err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("%s: find lo: %w", h.Name, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("%s: set lo up: %w", h.Name, err)
	}
	l, err := nh.LinkByName(h.Link)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", h.Name, h.Link, err)
	}
	h.IfIndex = l.Attrs().Index
	h.MAC = l.Attrs().HardwareAddr
	a4 := &netlink.Addr{IPNet: &net.IPNet{IP: h.IPv4.AsSlice(), Mask: net.CIDRMask(PrefixLen4, 32)}}
	a6 := &netlink.Addr{IPNet: &net.IPNet{IP: h.IPv6.AsSlice(), Mask: net.CIDRMask(PrefixLen6, 128)}, Flags: unix.IFA_F_NODAD}
	for _, a := range []*netlink.Addr{a4, a6} {
		if err := nh.AddrAdd(l, a); err != nil {
			return fmt.Errorf("%s: add %s to %s: %w", h.Name, a.IPNet, h.Link, err)
		}
	}
	// No duplicate address detection on the link: its link-local address
	// would stay tentative for a second after the link comes up, and
	// with it the host's neighbour solicitations from it.
	if err := DoIn(h.NS, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+h.Link+"/accept_dad", []byte("0"), 0)
	}); err != nil {
		return fmt.Errorf("%s: no DAD on %s: %w", h.Name, h.Link, err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: set %s up: %w", h.Name, h.Link, err)
	}
	return nil
}

// Do runs fn inside the host's network namespace on a locked OS thread and
// returns its error. The calling goroutine's namespace is not changed.
func (h *Host) Do(fn func() error) error {
	return DoIn(h.NS, fn)
}

// DoIn runs fn inside ns on a locked OS thread. The thread is thrown away
// afterwards rather than returned to the runtime when it could not be
// switched back.
func DoIn(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- doIn(ns, fn) }()
	return <-errc
}

// doIn is DoIn's goroutine. It closes the handle of the thread's own
// namespace before it returns, so that DoIn's caller never sees it open.
func doIn(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	var ferr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				ferr = fmt.Errorf("panic in netns: %v", r)
			}
		}()
		ferr = fn()
	}()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Close stops the relay, removes the namespaces (which destroys the veth
// pairs) and closes the handles. It is safe to call more than once.
func (p *Pair) Close() error {
	var errs []error
	if p.relay != nil {
		p.relay.close()
		p.relay = nil
	}
	if p.mid != -1 {
		p.mid.Close()
		p.mid = -1
		if err := netns.DeleteNamed(p.midName); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", p.midName, err))
		}
	}
	for _, h := range []*Host{p.A, p.B} {
		if h == nil || h.NS == -1 {
			continue
		}
		h.NS.Close()
		h.NS = -1
		if err := netns.DeleteNamed(h.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

// netnsDir is where named network namespaces are (ip netns's and
// netns.NewNamed's directory).
const netnsDir = "/run/netns"

// freeRigID returns the next rig name of this process ("xs<pid>-<seq>")
// whose namespaces do not exist yet. The process makes each name once, so
// one that exists was left by an earlier process with the same pid (one
// killed before its cleanup): it is skipped, not taken over, and a later
// run's leak check still sees it as there before.
func freeRigID() string {
	for {
		id := fmt.Sprintf("xs%d-%d", os.Getpid(), rigSeq.Add(1))
		_, errA := os.Lstat(filepath.Join(netnsDir, id+"-a"))
		_, errB := os.Lstat(filepath.Join(netnsDir, id+"-b"))
		_, errM := os.Lstat(filepath.Join(netnsDir, id+"-m"))
		if errA != nil && errB != nil && errM != nil { // not there (or not to be seen: creating it says why)
			return id
		}
	}
}

// newNamedNS creates a named network namespace without leaving the calling
// thread in it.
func newNamedNS(name string) (netns.NsHandle, error) {
	var ns netns.NsHandle = -1
	if err := shareNetnsDir(); err != nil {
		return ns, err
	}
	errc := make(chan error, 1)
	go func() {
		// orig is closed before the reply, so that the caller never sees
		// it open.
		errc <- func() error {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				return err
			}
			defer orig.Close()
			h, err := netns.NewNamed(name) // switches this thread into the new namespace
			if err != nil {
				return err
			}
			ns = h
			if err := netns.Set(orig); err != nil {
				return err // thread stays locked and dies
			}
			runtime.UnlockOSThread()
			return nil
		}()
	}()
	return ns, <-errc
}
