package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// enginePath is the Engine's sessions.WorkerDatapath. Its methods run under
// the session layer's control-plane lock: they take Engine.mu and a
// Target's lock briefly, make a few non-blocking syscalls (a route lookup
// and a socket bind for Open) and post to shards; they never wait for a
// worker.
type enginePath struct{ e *Engine }

var _ sessions.WorkerDatapath = (*enginePath)(nil)

// ours reports whether an endpoint of interface ifindex is the Engine's
// (0: the namespace has no interface; taken as this one).
func (p *enginePath) ours(ifindex int) bool { return ifindex == 0 || ifindex == p.e.ifc.Index }

// ListenerWorker spreads listeners over the Engine's workers.
func (p *enginePath) ListenerWorker(l sessions.Listener) uint32 {
	e := p.e
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.work[int(e.nextLW)%len(e.work)]
	e.nextLW++
	return w.id
}

// Listen registers a global UDP listener in datagram mode: its Target
// joins the table every worker reads and its owner worker's tx list.
//
// A listener of another transport (TCP, SCTP) is accepted for cut-through
// only: apps of this host reach it through the session layer, while the
// datapath keeps it out of the program's maps (see served), so the kernel
// keeps the transport's traffic on that port.
func (p *enginePath) Listen(l sessions.Listener) error {
	e := p.e
	if !p.ours(l.Endpoint.IfIndex) {
		return fmt.Errorf("listen %s: %w", l.Endpoint.URI(), e.otherInterface(l.Endpoint.IfIndex))
	}
	if l.Endpoint.Transport == flow.TransportTCP {
		if e.tcp == nil {
			return nil // no TCP stack (an Engine not made by New): cut-through only
		}
		return e.tcp.listen(l)
	}
	if !servedTransport(l.Endpoint.Transport) {
		return nil
	}
	w := e.workerByID(l.Worker)
	if w == nil {
		return fmt.Errorf("listen %s: worker %d: %w", l.Endpoint.URI(), l.Worker, ErrInvalidConfig)
	}
	t, err := udp.NewTarget(udp.KindListener, l.Handle, l.App, l.Worker, l.Pair, l.Memory)
	if err != nil {
		return fmt.Errorf("listen %s: %w", l.Endpoint.URI(), err)
	}
	t.Local = netip.AddrPortFrom(l.Endpoint.Addr, l.Endpoint.Port)
	t.HostReach = e.mayReachHost(l.App)
	t.Family = flow.Family4
	if l.Endpoint.Addr.Is6() && !l.Endpoint.Addr.Is4In6() {
		t.Family = flow.Family6
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	old := *e.lis.Load()
	m := make(map[flow.Handle]*udp.Target, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[l.Handle] = t
	e.lis.Store(&m)
	k := kernelKey(l.Endpoint)
	res, held := e.ports[k]
	e.openKernelPathLocked(t, res)
	if held && res == nil {
		e.shareKernelLocked(t, k)
	}
	if w.shard != nil {
		w.shard.Post(func(*sessions.Shard) { w.addTx(t) })
	} else {
		w.preTx = append(w.preTx, t) // before Start: the worker adopts it when it starts
	}
	return nil
}

// Unlisten drops a listener: no worker touches its fifos once the layer's
// deferred free runs. A listener of a transport the datapath does not
// serve has nothing to drop.
func (p *enginePath) Unlisten(l sessions.Listener) {
	e := p.e
	if l.Endpoint.Transport == flow.TransportTCP && e.tcp != nil {
		e.tcp.unlisten(l)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := *e.lis.Load()
	t := old[l.Handle]
	if t == nil {
		return
	}
	m := make(map[flow.Handle]*udp.Target, len(old))
	for k, v := range old {
		if k != l.Handle {
			m[k] = v
		}
	}
	e.lis.Store(&m)
	e.closeKernelPathLocked(t)
	if k := kernelKey(l.Endpoint); e.sharers[k] == t {
		delete(e.sharers, k)
	}
	t.Kill()
	if w := e.workerByID(t.Worker); w != nil && w.shard != nil {
		w.shard.Post(func(*sessions.Shard) { w.delTx(t) })
	}
}

// connectRoute returns the route of a connect to dst (its source address,
// its MTU), which must leave through the Engine's interface. Its errors
// say where the route goes instead; the layer names the connect. As the
// kernel's connect does, the route is looked up again from the source the
// first lookup chose, so that policy rules by source (ip rule from ADDR)
// decide the route the connection's packets take, and its errors.
func (e *Engine) connectRoute(dst netip.Addr) (nsbind.Route, error) {
	rt, err := e.ns.RouteGet(dst)
	if err != nil {
		return nsbind.Route{}, err
	}
	if rt.IfIndex == e.ifc.Index && !rt.Local && !rt.Multicast && !rt.Broadcast && rt.Src.IsValid() {
		src := rt.Src
		if rt, err = e.ns.RouteGetFrom(dst, src); err != nil {
			return nsbind.Route{}, err
		}
		rt.Src = src
	}
	if rt.IfIndex == e.ifc.Index {
		return rt, nil
	}
	name, own := e.ifName(rt.IfIndex), false
	if ifcs, err := e.ns.Interfaces(); err == nil {
		for _, ifc := range ifcs {
			for _, p := range ifc.Addrs {
				own = own || p.Addr() == dst
			}
		}
	}
	if own {
		return nsbind.Route{}, &ownAddressError{dst: dst, via: name}
	}
	return nsbind.Route{}, fmt.Errorf("%v is routed through %s, not %s, the interface this daemon serves: %w", dst, name, e.ifc.Name, ErrOtherInterface)
}

// ownAddressError is connectRoute's error for a destination that is an
// address of this host: the datapath does not reach it (no kernel socket
// of the host hears the datapath, and the host's apps are reached
// cut-through). It wraps ErrOtherInterface; Open completes it
// (ownAddress) once it knows the port.
type ownAddressError struct {
	dst netip.Addr
	via string // the interface the route takes
}

func (e *ownAddressError) Error() string {
	return fmt.Sprintf("%v is an address of this host (routed through %s): the datapath carries sessions to other hosts, "+
		"and between apps cut-through; a kernel socket of this host is reached with a kernel socket: %v", e.dst, e.via, ErrOtherInterface)
}

func (e *ownAddressError) Unwrap() error { return ErrOtherInterface }

// ownAddress completes the error of a connect to r, an address of this
// host (err, an *ownAddressError) that no app listens on: refused
// (flow.ErrRefused, ECONNREFUSED), as the kernel refuses a connect to a
// port of its own address that no socket holds, unless something holds
// the port there (kernelHolds: a kernel listener the kernel would reach
// and the datapath cannot, say): then err is returned, wrapping
// flow.ErrHostSocket too when the connecting app runs in the interface's
// namespace (app, mayReachHost), where the app library's Dial reaches that
// socket with a kernel socket of its own; an app elsewhere (a
// container's namespace) is told no more than that the address is the
// host's. Other errors are returned as they are.
func (e *Engine) ownAddress(err error, app sessions.AppID, r sessions.Endpoint) error {
	var oe *ownAddressError
	if !errors.As(err, &oe) {
		return err
	}
	held, lerr := e.kernelHolds(r.Transport, oe.dst, r.Port)
	if lerr != nil {
		return err
	}
	if held {
		if e.mayReachHost(app) {
			return fmt.Errorf("%w: %w", err, flow.ErrHostSocket)
		}
		return err
	}
	return fmt.Errorf("%v is an address of this host (routed through %s) and nothing listens on its %s port %d "+
		"(no app; the datapath carries sessions to other hosts, and between apps cut-through): %w",
		oe.dst, oe.via, r.Transport, r.Port, flow.ErrRefused)
}

// refusePortZero is the error of a TCP connect to port 0 of r's address:
// refused (flow.ErrRefused, ECONNREFUSED), as a kernel socket's connect
// is, whose SYN to port 0 the peer answers with a reset; the route's
// errors first, as the kernel's (ENETUNREACH for no route, a broadcast or
// multicast address).
func (e *Engine) refusePortZero(r sessions.Endpoint) error {
	dst := r.Addr.Unmap()
	rt, err := e.connectRoute(dst)
	if err != nil {
		return e.ownAddress(err, 0, r) // no socket holds port 0: refused
	}
	if rt.Broadcast || rt.Multicast {
		return fmt.Errorf("connect %v: a broadcast or multicast address, and a TCP connection goes to one host: %w", dst, flow.ErrNetUnreachable)
	}
	return fmt.Errorf("%v port 0: no host accepts a TCP connection on port 0: %w", dst, flow.ErrRefused)
}

// kernelHolds reports whether a kernel socket of the interface's
// namespace may take a connect of transport tr to dst, an address of this
// host, on port: whether a bind of that address and port fails with
// EADDRINUSE there (a listener, a bound UDP socket, and the ports the
// daemon reserves for its apps' sessions alike: a port held by anything
// counts as held). One bind, not a listing of the namespace's sockets,
// so that an app's dials cost the daemon the same however many sockets
// the host has. No socket holds port 0.
func (e *Engine) kernelHolds(tr flow.Transport, dst netip.Addr, port uint16) (bool, error) {
	if port == 0 {
		return false, nil
	}
	typ := unix.SOCK_DGRAM
	if tr == flow.TransportTCP {
		typ = unix.SOCK_STREAM
	}
	var held bool
	err := doIn(e.nsh, func() error {
		dst := dst.Unmap()
		fam, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: dst.As16(), Port: int(port)})
		if dst.Is4() {
			fam, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: dst.As4(), Port: int(port)}
		}
		fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		err = unix.Bind(fd, sa)
		held = errors.Is(err, unix.EADDRINUSE)
		if err != nil && !held {
			return err
		}
		return nil
	})
	return held, err
}

// ifName names the namespace's interface ifindex, or says its index when
// the namespace does not list it.
func (e *Engine) ifName(ifindex int) string {
	if ifcs, err := e.ns.Interfaces(); err == nil {
		for _, ifc := range ifcs {
			if ifc.Index == ifindex {
				return ifc.Name
			}
		}
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// otherInterface is the error of a listen or connect over the datapath
// by an app whose namespace is on ifindex, another interface than the
// Engine's: it says what the app can do instead.
func (e *Engine) otherInterface(ifindex int) error {
	name := e.ifName(ifindex)
	return fmt.Errorf("the app's namespace is on %s and this daemon's datapath runs on %s: attach with local scope "+
		"(cut-through between this host's apps), or run a daemon on %s: %w", name, e.ifc.Name, name, ErrOtherInterface)
}

// Open starts a connected UDP session: the local address is the route's
// source for the destination, the local port an ephemeral one reserved by
// binding a kernel UDP socket in the namespace. The session is claimed at
// once (see runClaims). Other transports fail at once with
// flow.ErrNotSupported (connects between apps of this host never get
// here: the layer makes them cut-through).
func (p *enginePath) Open(req sessions.OpenRequest) (netip.AddrPort, error) {
	e := p.e
	r := req.Remote
	if !servedTransport(r.Transport) {
		return netip.AddrPort{}, fmt.Errorf("%s datapath not implemented: %w", r.Transport, flow.ErrNotSupported)
	}
	if !p.ours(r.IfIndex) {
		return netip.AddrPort{}, e.otherInterface(r.IfIndex)
	}
	if !e.started.Load() {
		return netip.AddrPort{}, ErrNotStarted
	}
	if r.Transport == flow.TransportTCP {
		if e.tcp == nil {
			return netip.AddrPort{}, fmt.Errorf("no tcp stack: %w", flow.ErrNotSupported)
		}
		if r.Port == 0 {
			return netip.AddrPort{}, e.refusePortZero(r)
		}
		local, err := e.tcp.open(req)
		return local, e.ownAddress(err, req.App, r)
	}
	dst := r.Addr.Unmap()
	rt, err := e.connectRoute(dst)
	if err != nil {
		return netip.AddrPort{}, e.ownAddress(err, req.App, r)
	}
	src := rt.Src
	var res *udp.Reservation
	if err := doIn(e.nsh, func() error {
		var err error
		res, err = udp.Reserve(netip.AddrPortFrom(e.scoped(src.Unmap()), 0))
		return err
	}); err != nil {
		return netip.AddrPort{}, err
	}
	// Connected to the peer, the socket learns of its ICMP errors
	// (peerWatch).
	if err := res.Connect(netip.AddrPortFrom(e.scoped(dst), r.Port)); err != nil {
		res.Close()
		return netip.AddrPort{}, err
	}
	local := res.Addr()
	fam := flow.Family4
	if dst.Is6() {
		fam = flow.Family6
	}
	c := &connectedSession{ho: req.HalfOpen, res: res, remote: netip.AddrPortFrom(dst, r.Port), local: local, ifindex: e.ifc.Index,
		tuple: flow.FiveTuple{Local: flow.AddrBytes(local.Addr()), LocalPort: local.Port(),
			Remote: flow.AddrBytes(dst), RemotePort: r.Port, Proto: flow.TransportUDP, Family: fam}}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		res.Close()
		return netip.AddrPort{}, ErrClosed
	}
	e.claimsBusy.Add(1)
	select {
	case e.claims <- claim{ho: req.HalfOpen, c: c}:
	default:
		e.claimsBusy.Add(-1)
		e.progress.note()
		res.Close()
		return netip.AddrPort{}, ErrBusy
	}
	e.conns[req.HalfOpen] = c
	return local, nil
}

// Close ends a connected session the app closed (half-open or
// established): its port is released and no worker touches its fifos
// once the layer's deferred free runs.
func (p *enginePath) Close(h flow.Handle, t flow.FiveTuple) {
	e := p.e
	if t.Proto == flow.TransportTCP && e.tcp != nil && e.tcp.closeByApp(h) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.conns[h]; c != nil {
		e.closeConnLocked(c)
	}
}

// closeConnLocked forgets connected session c: its port is released, and
// no worker queues into its fifos or reads them once it returns.
func (e *Engine) closeConnLocked(c *connectedSession) {
	for _, h := range []flow.Handle{c.ho, c.h} {
		if e.conns[h] == c {
			delete(e.conns, h)
		}
	}
	c.closed = true
	if c.target != nil {
		e.closeKernelPathLocked(c.target)
	}
	e.unwatchLocked(c)
	// Its port the kernel's once the program no longer steers the
	// 5-tuple (the layer published that before it called Close).
	if res := c.res; res != nil {
		e.handBack(flow.TransportUDP, res.Addr(), func() { res.Close() })
	}
	if c.target != nil {
		e.unpublishConnLocked(c.tuple)
		c.target.Kill()
		t, w := c.target, c.worker
		w.shard.Post(func(*sessions.Shard) { w.delTx(t); w.delConn(c) })
	}
}

func (e *Engine) workerByID(id uint32) *worker {
	i := int(id) - int(e.cfg.FirstWorker)
	if i < 0 || i >= len(e.work) {
		return nil
	}
	return e.work[i]
}
