package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// Limits on what an app may ask for at attach, beyond the session layer's.
const (
	maxSegmentSize = 1 << 30
)

// client serves one control connection: an app (once it attached) or the
// CLI. Its requests are handled one at a time on the connection's
// goroutine.
type client struct {
	d     *Daemon
	c     *api.Conn
	id    uint64 // the session layer's client id
	name  string // from Hello
	minor uint8  // the protocol's minor version the client speaks (Hello)
	cred  api.Cred
	since time.Time

	// Set by the connection's goroutine; read by other goroutines under
	// Daemon.mu.
	app      sessions.AppID
	mgr      *fifo.Manager // the app's segment manager
	wake     *sharedFD     // a duplicate of the epoll set that wakes the app (its event queue's WaitFD)
	ns       string
	attached bool
	memRes   uint64 // segment memory reserved for the app (Limits)
	// unkick closes the app's kick eventfds, once it detached.
	unkick func()

	// sent are the descriptors of the last reply, duplicated for it; the
	// server has sent the reply by the time the next request (or Close)
	// comes, and they are closed then. Connection goroutine only.
	sent []int

	// capStop is closed when the connection ends, to end its capture;
	// nil: no capture. Connection goroutine only.
	capStop chan struct{}
}

// wakeRef returns the epoll set that wakes the app (its event queue's
// WaitFD) with a reference the caller releases, or nil when the app is
// not attached (any more).
func (h *client) wakeRef() *sharedFD {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if h.wake != nil && h.wake.refs.tryRef() {
		return h.wake
	}
	return nil
}

func (h *client) closeSent() {
	for _, fd := range h.sent {
		unix.Close(fd)
	}
	h.sent = h.sent[:0]
}

// dupFDs duplicates fds for a reply; the duplicates are closed after it
// was sent (closeSent).
func (h *client) dupFDs(fds ...int) ([]int, error) {
	out := make([]int, 0, len(fds))
	for _, fd := range fds {
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, x := range out {
				unix.Close(x)
			}
			return nil, fmt.Errorf("dup: %w", err)
		}
		out = append(out, nfd)
	}
	h.sent = append(h.sent, out...)
	return out, nil
}

// Handle serves one request.
func (h *client) Handle(ctx context.Context, req api.Request) (api.Message, []int, error) {
	h.closeSent()
	api.CloseFDs(req.FDs) // no request carries descriptors
	d := h.d
	switch m := req.Msg.(type) {
	case *api.Attach:
		return h.attach(m)
	case *api.Detach:
		if !h.attached {
			return nil, nil, fmt.Errorf("detach: %w", flow.ErrNotAttached)
		}
		h.flushTx()
		h.detach()
		return nil, nil, nil
	case *api.Bind:
		return h.bind(m)
	case *api.Unbind:
		if err := h.needApp("unbind"); err != nil {
			return nil, nil, err
		}
		if err := d.layer.Unbind(h.app, m.Handle); err != nil {
			return nil, nil, err
		}
		d.mu.Lock()
		d.untrackLocked(h.app, m.Handle)
		d.mu.Unlock()
		// The reply once the port is the kernel's again, as a kernel
		// socket's close leaves it (datapath's handback.go).
		h.waitMirror("unbind")
		return nil, nil, nil
	case *api.Connect:
		return h.connect(m)
	case *api.Disconnect:
		return h.disconnect("disconnect", m.Handle, d.layer.Disconnect)
	case *api.Abort:
		return h.disconnect("abort", m.Handle, d.layer.StreamAbort)
	case *api.CloseWrite:
		if err := h.needApp("close write"); err != nil {
			return nil, nil, err
		}
		if err := d.layer.StreamCloseWrite(h.app, m.Handle); err != nil {
			return nil, nil, err
		}
		return nil, nil, nil
	case *api.SetKeepalive:
		if err := h.needApp("set keepalive"); err != nil {
			return nil, nil, err
		}
		// A count past Linux's bound is refused by the layer; min keeps
		// the conversion exact on any int.
		k := sessions.Keepalive{Enabled: m.Enabled, Idle: m.Idle, Interval: m.Interval, Count: int(min(m.Count, flow.KeepaliveMaxCount+1))}
		if err := d.layer.StreamSetKeepalive(h.app, m.Handle, k); err != nil {
			return nil, nil, err
		}
		return nil, nil, nil
	case *api.PathMTU:
		return h.pathMTU(m)
	case *api.Membership:
		return h.membership(m)
	case *api.SleepFlags:
		if err := h.needApp("sleep flags"); err != nil {
			return nil, nil, err
		}
		fd := d.eng.SleepFlagsFD()
		if fd < 0 {
			return nil, nil, fmt.Errorf("sleep flags: no datapath: %w", flow.ErrNotSupported)
		}
		// The server sends a duplicate; the engine keeps its own.
		return &api.SleepFlagsReply{}, []int{fd}, nil
	case *api.Show:
		doc, err := d.show(m, req.Peer)
		if err != nil {
			return nil, nil, err
		}
		return &api.ShowReply{JSON: doc}, nil, nil
	case *api.Capture:
		// Frames of every app, payloads too: what tcpdump needs
		// privileges for.
		if err := d.needAdmin(req.Peer, "capture"); err != nil {
			return nil, nil, err
		}
		return h.capture(m)
	case *api.StatsClear:
		if err := d.needAdmin(req.Peer, "clear stats"); err != nil {
			return nil, nil, err
		}
		d.ClearStats()
		return nil, nil, nil
	case *api.NsAdd:
		if err := d.needAdmin(req.Peer, "ns add"); err != nil {
			return nil, nil, err
		}
		return nil, nil, d.AddNamespace(m.ID, m.Secret, m.Iface, m.Netns)
	case *api.NsDel:
		if err := d.needAdmin(req.Peer, "ns del"); err != nil {
			return nil, nil, err
		}
		return nil, nil, d.DelNamespace(m.ID)
	case *api.NsSetSecret:
		if err := d.needAdmin(req.Peer, "ns set-secret"); err != nil {
			return nil, nil, err
		}
		return nil, nil, d.SetNamespaceSecret(m.ID, m.Secret)
	case *api.RuleAdd:
		if err := d.needAdmin(req.Peer, "rule add"); err != nil {
			return nil, nil, err
		}
		r, err := ruleFromAPI(m.Rule)
		if err != nil {
			return nil, nil, fmt.Errorf("rule add: %w", err)
		}
		id, err := d.layer.AddRule(r)
		if err != nil {
			return nil, nil, err
		}
		return &api.RuleAddReply{ID: id}, nil, nil
	case *api.RuleDel:
		if err := d.needAdmin(req.Peer, "rule del"); err != nil {
			return nil, nil, err
		}
		if m.ID != 0 {
			return nil, nil, d.layer.DelRule(m.ID)
		}
		if m.Rule.Tag != "" {
			return nil, nil, d.layer.DelRulesByTag(m.Rule.Tag)
		}
		r, err := ruleFromAPI(m.Rule)
		if err != nil {
			return nil, nil, fmt.Errorf("rule del: %w", err)
		}
		return nil, nil, d.layer.DelRuleMatching(r)
	}
	return nil, nil, fmt.Errorf("%v is not a request: %w", req.Msg.Type(), flow.ErrNotSupported)
}

// Close ends the connection: an attached app is detached, which frees its
// listeners, sessions, rules and memory.
func (h *client) Close(err error) {
	h.closeSent()
	if h.capStop != nil {
		close(h.capStop)
	}
	h.d.mu.Lock()
	delete(h.d.clients, h.id)
	closing := h.d.closing
	if closing && h.attached {
		// The daemon is stopping: detach once every app hung up, so that
		// no app sees its peers go before it saw the daemon go.
		h.d.detachLater = append(h.d.detachLater, h)
	}
	h.d.mu.Unlock()
	if r, dropped := dropReason(err); dropped {
		// The server dropped a client that does not read or idles: its app
		// goes with it, logged once here.
		h.d.dropped[r].Add(1)
		h.d.log.Warn("client dropped", "conn", h.id, "name", h.name, "pid", h.cred.PID, "uid", h.cred.UID,
			"app", h.app, "attached", h.attached, "reason", dropNames[r], "err", err)
	}
	if h.attached && !closing {
		h.flushTx()
		h.detach()
	}
	h.d.log.Debug("connection closed", "conn", h.id, "name", h.name, "pid", h.cred.PID, "reason", err)
}

// Reasons the control server drops a client for.
const (
	dropSendTimeout = iota
	dropQueueFull
	dropIdle
	numDrops
)

var dropNames = [numDrops]string{"send_timeout", "queue_full", "idle"}

// dropReason says whether err, the end of a connection, is the control
// server dropping the client, and why.
func dropReason(err error) (int, bool) {
	switch {
	case errors.Is(err, api.ErrSendTimeout):
		return dropSendTimeout, true
	case errors.Is(err, api.ErrQueueFull):
		return dropQueueFull, true
	case errors.Is(err, api.ErrIdle):
		return dropIdle, true
	}
	return 0, false
}

// pathMTU answers PathMTU: the MTU the datapath sends with from the app's
// listener or session to m.Remote. Without a datapath for the handle (no
// engine, another interface, a cut-through session) the error wraps
// flow.ErrNotSupported: the app then knows no limit.
func (h *client) pathMTU(m *api.PathMTU) (api.Message, []int, error) {
	if err := h.needApp("path mtu"); err != nil {
		return nil, nil, err
	}
	ep, err := h.d.layer.WireEndpoint(h.app, m.Handle)
	if err != nil {
		return nil, nil, fmt.Errorf("path mtu: %w", err)
	}
	dst := m.Remote.Unmap()
	if !dst.IsValid() || dst.IsUnspecified() {
		return nil, nil, fmt.Errorf("path mtu: remote %v: %w", m.Remote, flow.ErrInvalidValue)
	}
	fam := uint8(flow.Family4)
	if dst.Is6() {
		fam = flow.Family6
	}
	if fam != ep.Family() {
		return nil, nil, fmt.Errorf("path mtu: remote %v is not of the family of %s: %w", dst, ep.URI(), flow.ErrInvalidValue)
	}
	mtu, err := h.d.eng.PathMTUFrom(ep, dst)
	if err != nil {
		return nil, nil, err
	}
	return &api.PathMTUReply{MTU: uint32(mtu)}, nil, nil
}

// membership answers Membership: the app's UDP listener joins or leaves
// a multicast group through the kernel socket holding its port
// (datapath.Engine.JoinGroup), on the interface of that name in the netns
// of the app's namespace, or with ifindex 0 (the kernel's pick by route)
// when none is named. The group must be a multicast address of the
// listener's family.
func (h *client) membership(m *api.Membership) (api.Message, []int, error) {
	op := "join group"
	if m.Leave {
		op = "leave group"
	}
	if err := h.needApp(op); err != nil {
		return nil, nil, err
	}
	g := m.Group.Unmap()
	ep, err := h.d.layer.WireEndpoint(h.app, m.Handle)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %v: %w", op, g, err)
	}
	if ep.Transport != flow.TransportUDP {
		return nil, nil, fmt.Errorf("%s %v: %s is no UDP listener: %w", op, g, ep.URI(), flow.ErrNotSupported)
	}
	if !g.IsValid() || !g.IsMulticast() {
		return nil, nil, fmt.Errorf("%s %v: not a multicast address: %w", op, g, flow.ErrInvalidValue)
	}
	fam := uint8(flow.Family4)
	if g.Is6() {
		fam = flow.Family6
	}
	if fam != ep.Family() {
		return nil, nil, fmt.Errorf("%s %v: the group is not of the family of %s: %w", op, g, ep.URI(), flow.ErrInvalidValue)
	}
	ifindex := 0
	if m.Iface != "" {
		n, _ := h.nsConfig()
		ns := h.d.netnsOf(n)
		if ns == nil {
			return nil, nil, fmt.Errorf("%s %v on %s: the daemon does not follow the namespace's netns: %w", op, g, m.Iface, flow.ErrNotSupported)
		}
		ifc, err := ns.InterfaceByName(m.Iface)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %v: no interface %q in the namespace's netns: %w: %w", op, g, m.Iface, flow.ErrInvalidValue, err)
		}
		ifindex = ifc.Index
	}
	if m.Leave {
		err = h.d.eng.LeaveGroup(h.app, m.Handle, g, ifindex)
	} else {
		err = h.d.eng.JoinGroup(h.app, m.Handle, g, ifindex)
	}
	if err != nil {
		return nil, nil, err
	}
	return nil, nil, nil
}

func (h *client) needApp(op string) error {
	if !h.attached {
		return fmt.Errorf("%s: %w", op, flow.ErrNotAttached)
	}
	return nil
}

// disconnect closes session handle of the app with close (the layer's
// Disconnect or StreamAbort) and forgets it.
func (h *client) disconnect(op string, handle flow.Handle, close func(sessions.AppID, flow.Handle) error) (api.Message, []int, error) {
	if err := h.needApp(op); err != nil {
		return nil, nil, err
	}
	if err := close(h.app, handle); err != nil {
		return nil, nil, err
	}
	d := h.d
	d.mu.Lock()
	d.untrackLocked(h.app, handle)
	d.mu.Unlock()
	if d.eng.HandingBack(flow.TransportUDP) {
		// A connected UDP session's port: the kernel's when the
		// close returns, as after Unbind.
		h.waitMirror(op)
	}
	return nil, nil, nil
}

// exitLinger bounds how long the datagrams an app's tx fifos hold when
// it detaches (or its process ends) may take to go out.
const exitLinger = 250 * time.Millisecond

// flushTx sends what the app's UDP tx fifos hold before it is detached
// (datapath.Engine.FlushTx), at most exitLinger: a process that exits
// right after its last write loses none of it, as a kernel socket's
// datagrams go out after their process exited. An app the daemon
// detaches as it stops is not waited for.
func (h *client) flushTx() {
	ctx, cancel := context.WithTimeout(context.Background(), exitLinger)
	defer cancel()
	if !h.d.eng.FlushTx(ctx, h.app) {
		h.d.log.Warn("app detached with datagrams its tx fifos still held", "app", h.app, "name", h.name, "pid", h.cred.PID, "waited", exitLinger)
	}
}

func (h *client) detach() {
	d := h.d
	// Forget the app's fifos first: the metrics read them under d.mu, and
	// the memory goes with the detach.
	d.mu.Lock()
	delete(d.byApp, h.app)
	delete(d.fifos, h.app)
	d.dropPendingLocked(h.app)
	wake := h.wake
	if h.attached {
		d.unreserveLocked(h.cred, h.memRes)
	}
	unkick := h.unkick
	h.attached, h.mgr, h.wake, h.memRes, h.unkick = false, nil, nil, 0, nil
	d.mu.Unlock()
	d.layer.DetachClient(h.id)
	if unkick != nil {
		unkick()
	}
	if wake != nil {
		wake.release()
	}
	d.log.Info("app detached", "app", h.app, "name", h.name, "pid", h.cred.PID)
}

// mirrorTimeout bounds the wait for the datapath's tables after a bind,
// unbind or connect.
const mirrorTimeout = 2 * time.Second

// waitMirror waits for the datapath to apply the layer's last changes.
func (h *client) waitMirror(what string) {
	ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
	defer cancel()
	if err := h.d.eng.WaitMirror(ctx); err != nil {
		h.d.log.Warn("datapath tables lag behind", "after", what, "err", err)
	}
}

func validTransport(t flow.Transport) error {
	switch t {
	case flow.TransportTCP, flow.TransportUDP:
		return nil
	case flow.TransportSCTP:
		return fmt.Errorf("transport %v: %w", t, flow.ErrNotSupported)
	}
	return fmt.Errorf("transport %d: %w", uint8(t), flow.ErrInvalidValue)
}

func validScope(s flow.Scope) error {
	if s&^(flow.ScopeGlobal|flow.ScopeLocal) != 0 {
		return fmt.Errorf("scope %#x: %w", uint8(s), flow.ErrInvalidValue)
	}
	return nil
}

func (h *client) attach(m *api.Attach) (api.Message, []int, error) {
	d := h.d
	if h.attached {
		return nil, nil, fmt.Errorf("attach: %w", flow.ErrAlreadyAttached)
	}
	if err := validScope(m.Scope); err != nil {
		return nil, nil, fmt.Errorf("attach: %w", err)
	}
	// The default namespace by the name every listing gives it.
	m.Namespace = NamespaceID(m.Namespace)
	for _, t := range m.ProxyTransports {
		if err := validTransport(t); err != nil {
			return nil, nil, fmt.Errorf("attach: proxy: %w", err)
		}
	}
	if m.Proxy {
		// A proxy listens on every port of its namespace, privileged ones
		// too, and takes every connect of the namespace's apps (other
		// users' among them) to a port no other app listens on.
		if err := d.needAdmin(h.cred, fmt.Sprintf("attach: a proxy app (every port of namespace %q)", m.Namespace)); err != nil {
			return nil, nil, err
		}
	}
	if m.SegmentSize > maxSegmentSize || m.AddSegmentSize > maxSegmentSize {
		return nil, nil, fmt.Errorf("attach: segment size over %d: %w", maxSegmentSize, flow.ErrInvalidValue)
	}
	name := m.Name
	if name == "" {
		name = h.name
	}
	p := h.cred
	d.mu.Lock()
	acl, hasACL := d.nsAccess[m.Namespace]
	d.mu.Unlock()
	if hasACL && p.UID != 0 && !acl.Allows(p.UID, peerGroups(p)) {
		return nil, nil, fmt.Errorf("namespace %q does not let uid %d attach: %w", m.Namespace, p.UID, flow.ErrPermission)
	}
	if m.Namespace != "" && !d.secrets.Allow(uint64(p.UID)) {
		d.secretRefused.Add(1)
		return nil, nil, fmt.Errorf("too many wrong secrets from uid %d, try again later: %w", p.UID, flow.ErrLimit)
	}
	// What the app may grow to: uid 0 is not bound per uid.
	maxMem := m.MaxFifoMemory
	var res uint64
	if p.UID != 0 {
		if maxMem == 0 || maxMem > d.limits.AppSegmentMemory {
			maxMem = d.limits.AppSegmentMemory
		}
		seg := m.SegmentSize
		if seg == 0 {
			seg = sessions.DefaultSegmentSize
		}
		res = max(maxMem, seg)
	}
	d.mu.Lock()
	err := d.reserveLocked(p, res)
	d.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	reserved := true
	defer func() {
		if reserved {
			d.mu.Lock()
			d.unreserveLocked(p, res)
			d.mu.Unlock()
		}
	}()
	att, err := d.layer.Attach(sessions.AttachOptions{
		ClientID: h.id, Name: name, Namespace: m.Namespace, Secret: m.Secret, Scope: m.Scope,
		RxFifoSize: m.RxFifoSize, TxFifoSize: m.TxFifoSize,
		SegmentSize: m.SegmentSize, AddSegmentSize: m.AddSegmentSize, MaxFifoMemory: maxMem,
		// The app maps no more than the uid's budget holds for it.
		MaxSegmentMemory: res,
		Proxy:            m.Proxy, ProxyTransports: m.ProxyTransports, Owner: p.UID,
		NewWaitSet: waitSetFor(p.UID),
	})
	if errors.Is(err, flow.ErrWrongSecret) {
		d.secretFailures.Add(1)
		if d.secrets.Fail(uint64(p.UID)) {
			d.log.Warn("wrong namespace secrets: further attempts refused for a while", "namespace", m.Namespace, "pid", p.PID, "uid", p.UID)
		} else {
			d.log.Warn("wrong namespace secret", "namespace", m.Namespace, "pid", p.PID, "uid", p.UID)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	mgr, ok := sessions.FifoManager(att.Memory)
	var q *fifo.EventQueue
	if ok {
		q = mgr.EventQueue()
	}
	if q == nil {
		d.layer.Detach(att.App)
		return nil, nil, errors.New("attach: app memory has no event queue")
	}
	wake, err := newSharedFD(q.WaitFD())
	if err != nil {
		d.layer.Detach(att.App)
		return nil, nil, fmt.Errorf("attach: %w", err)
	}
	segs := mgr.Segments()
	if len(segs) > api.MaxSegmentFDs {
		wake.release()
		d.layer.Detach(att.App)
		return nil, nil, fmt.Errorf("attach: %d segments: %w", len(segs), flow.ErrNoMemory)
	}
	// The datapath groups the TCP buffers of a user's apps (before the
	// app can open anything).
	d.eng.SetAppUser(att.App, p.UID)
	// Where the app runs: its datagrams to the host itself reach the
	// host's sockets only from the interface's namespace. A process whose
	// namespace cannot be read (gone already) is taken to be elsewhere.
	if fib, err := nsbind.FIBOfPID(int(p.PID)); err == nil {
		d.eng.SetAppNetns(att.App, fib)
	}
	if h.minor >= 2 {
		d.eng.SetAppMarksAccepts(att.App) // its Accept marks what it takes
	}
	// The app's own kick eventfds: a worker tells who woke it, and pauses
	// an app that wakes it for nothing.
	kicks, unkick, err := d.eng.AppKicks(att.App)
	if err != nil {
		wake.release()
		d.layer.Detach(att.App)
		return nil, nil, fmt.Errorf("attach: %w", err)
	}
	reply := &api.AttachReply{
		AppIndex:   uint32(att.App),
		EventQueue: api.QueueRef{Segment: q.Fifo().Segment().Index(), Offset: uint64(q.Offset()), Capacity: uint32(q.Capacity())},
		Workers:    uint8(len(kicks)),
	}
	fds := make([]int, 0, len(segs)+1+len(kicks))
	for _, s := range segs {
		reply.Segments = append(reply.Segments, api.Segment{Index: s.Index(), Size: uint64(s.Size())})
		fds = append(fds, s.FD())
	}
	fds = append(fds, q.WaitFD())
	fds = append(fds, kicks...)
	d.mu.Lock()
	reserved = false // the detach gives it back
	h.memRes = res
	h.unkick = unkick
	h.app, h.mgr, h.wake, h.ns, h.attached = att.App, mgr, wake, m.Namespace, true
	d.byApp[att.App] = h
	d.mu.Unlock()
	d.log.Info("app attached", "app", att.App, "name", name, "namespace", m.Namespace, "pid", h.cred.PID, "uid", h.cred.UID)
	d.applyForwardsTo(name)
	return reply, fds, nil
}

// endpoint reads the endpoint of a Bind or Connect: the URI when given,
// else the endpoint, whose interface and FIB are the namespace's. A URI's
// IPv6 address may carry a zone (tcp://[fe80::1%eth0]:80, as net.Dial
// takes it) that names the interface of the app's namespace, by name or
// index; another is refused.
func (h *client) endpoint(uri string, ep flow.Endpoint) (flow.Endpoint, error) {
	if uri != "" {
		plain, zone := flow.SplitZone(uri)
		e, err := flow.ParseURI(plain)
		if err == nil && zone != "" {
			err = h.checkZone(uri, zone)
		}
		return e, err
	}
	if err := validTransport(ep.Transport); err != nil {
		return flow.Endpoint{}, err
	}
	ep.IfIndex, ep.FIB = 0, 0
	return ep, nil
}

// checkZone reports whether zone, of URI uri, names the interface of the
// app's namespace, by its name in the namespace's netns or its index.
func (h *client) checkZone(uri, zone string) error {
	n, _ := h.nsConfig()
	if n.IfIndex == 0 {
		return fmt.Errorf("%w %q: zone %q: the app's namespace has no interface; give the address alone", flow.ErrInvalidURI, uri, zone)
	}
	name := h.d.ifName(n)
	if zone == strconv.Itoa(n.IfIndex) || (name != "" && zone == name) {
		return nil
	}
	on := name
	if on == "" {
		on = "ifindex " + strconv.Itoa(n.IfIndex)
	}
	return fmt.Errorf("%w %q: zone %q: the app's namespace is on %s; a link-local address is on that link, zoned with its name or index, or given alone", flow.ErrInvalidURI, uri, zone, on)
}

// ifName names interface n.IfIndex in the netns of namespace n, or ""
// when the daemon does not follow that netns or has no such interface.
func (d *Daemon) ifName(n sessions.NamespaceConfig) string {
	ns := d.netnsOf(n)
	if ns == nil {
		return ""
	}
	ifc, err := ns.InterfaceByIndex(n.IfIndex)
	if err != nil {
		return ""
	}
	return ifc.Name
}

// netnsOf returns the netns of namespace n as the daemon follows it, or
// nil when it does not.
func (d *Daemon) netnsOf(n sessions.NamespaceConfig) *nsbind.Namespace {
	d.mu.Lock()
	r := d.netnss[n.FIB4]
	d.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.ns
}

// nsConfig returns the configuration of the app's namespace; ok is false
// when the layer has none of that ID.
func (h *client) nsConfig() (n sessions.NamespaceConfig, ok bool) {
	for _, ni := range h.d.layer.Namespaces() {
		if ni.ID == h.ns {
			return ni.NamespaceConfig, true
		}
	}
	return n, false
}

// inNamespace fills e's interface and FIB as the session layer does for
// the app's namespace.
func (h *client) inNamespace(e flow.Endpoint) flow.Endpoint {
	if n, ok := h.nsConfig(); ok {
		e.IfIndex = n.IfIndex
		e.FIB = n.FIB4
		if e.Addr.Is6() && !e.Addr.Is4In6() {
			e.FIB = n.FIB6
		}
	}
	return e
}

func (h *client) bind(m *api.Bind) (api.Message, []int, error) {
	d := h.d
	if err := h.needApp("bind"); err != nil {
		return nil, nil, err
	}
	e, err := h.endpoint(m.URI, m.Endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("bind: %w", err)
	}
	if err := mayBindPort(h.cred, e); err != nil {
		return nil, nil, err
	}
	hd, err := d.layer.Bind(h.app, e)
	if err != nil {
		return nil, nil, err
	}
	if be, err := d.layer.BoundEndpoint(h.app, hd); err == nil {
		e.Port = be.Port // port 0 asked for one; this is the one bound
	}
	// Reply once the datapath steers the listener's packets, as a kernel
	// socket receives from the moment bind returns.
	h.waitMirror("bind " + e.URI())
	if d.eng.SteerRefused(hd) {
		// The program's listener map is full: bound, the listener would
		// get nothing (a TCP peer a reset from the port's reservation).
		_ = d.layer.Unbind(h.app, hd)
		h.waitMirror("unbind " + e.URI()) // the port the kernel's again
		return nil, nil, fmt.Errorf("bind %s: the datapath's listener table is full (every entry of the XDP program's listener map is taken): close listeners first: %w",
			e.URI(), flow.ErrLimit)
	}
	reply := &api.BindReply{Handle: hd, Local: h.inNamespace(e)}
	// A listener's datagram fifos are only of use with a datapath to fill
	// and drain them: without one the app gets none, and its writes to
	// the wire fail at once instead of filling a fifo nobody drains.
	if !hd.IsLocal() && d.eng.Datapath() != nil {
		pair, worker, err := d.layer.ListenerPair(h.app, hd)
		rx, tx := pair.Rx, pair.Tx
		if err == nil && rx != nil && tx != nil {
			reply.Worker = worker
			reply.Rx = h.mgr.Ref(rx)
			reply.Tx = h.mgr.Ref(tx)
			d.mu.Lock()
			d.trackLocked(h.app, hd, pairRef{pair: pair})
			d.mu.Unlock()
		}
	}
	return reply, nil, nil
}

func (h *client) connect(m *api.Connect) (api.Message, []int, error) {
	d := h.d
	if err := h.needApp("connect"); err != nil {
		return nil, nil, err
	}
	e, err := h.endpoint(m.URI, m.Endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	res, err := d.layer.Connect(h.app, e, m.Opaque)
	if err != nil {
		return nil, nil, err
	}
	remote := h.inNamespace(e)
	if !res.CutThrough {
		h.waitMirror("connect " + e.URI())
		if e.Transport == flow.TransportUDP && d.eng.SteerRefused(res.Handle) {
			// The program's established map is full: connected, the
			// session would get nothing (the peer's datagrams go to the
			// kernel). A TCP connect fails in its dial (ConnectFailed).
			_ = d.layer.Disconnect(h.app, res.Handle)
			return nil, nil, fmt.Errorf("connect %s: %w", e.URI(), datapath.ErrSessionTableFull)
		}
		local := flow.Endpoint{Transport: e.Transport, Addr: res.Local.Addr(), Port: res.Local.Port()}
		return &api.ConnectReply{SessionInfo: api.SessionInfo{Handle: res.Handle, Worker: res.Handle.Worker(), Remote: remote, Local: h.inNamespace(local)}}, nil, nil
	}
	ct := d.takeCutThrough(h.app, res.Handle)
	if ct == nil {
		// The peer went away between the connect and now; the session
		// layer closed the session with it.
		return nil, nil, fmt.Errorf("connect %s: the listening app went away: %w", e.URI(), flow.ErrConnect)
	}
	defer ct.release()
	d.mu.Lock()
	acc, con := ct.accepted, ct.connected
	server := d.byApp[acc.App]
	d.mu.Unlock()
	// Until the Accepted notice is queued, the listening app has not
	// heard of the session: a failure closes it without telling it, and
	// neither end's fifos stay in the daemon's books (no event comes to
	// take them out: the listening app is told nothing, and this app
	// gets an error instead of the session).
	withdraw := func() {
		if err := d.layer.WithdrawConnect(h.app, res.Handle); err != nil {
			d.log.Debug("withdraw cut-through connect", "conn", h.id, "err", err)
		}
		d.mu.Lock()
		d.untrackLocked(h.app, res.Handle)
		d.untrackLocked(acc.App, acc.Handle)
		d.mu.Unlock()
	}
	var srvWake, myWake *sharedFD
	if server != nil {
		srvWake = server.wakeRef()
	}
	myWake = h.wakeRef()
	defer func() {
		if srvWake != nil {
			srvWake.release()
		}
		if myWake != nil {
			myWake.release()
		}
	}()
	if srvWake == nil || myWake == nil {
		withdraw()
		return nil, nil, fmt.Errorf("connect %s: the listening app went away: %w", e.URI(), flow.ErrConnect)
	}
	seg := api.Segment{Index: 0, Size: uint64(ct.seg.Size())}
	info := func(ev sessions.Event, local, remote flow.Endpoint) api.SessionInfo {
		rx, tx := ev.Pair.Rx, ev.Pair.Tx
		return api.SessionInfo{
			Handle: ev.Handle, Worker: flow.CutThroughWorker,
			Rx:    api.FifoRef{Segment: 0, Offset: rx.Offset(), Size: rx.Size()},
			Tx:    api.FifoRef{Segment: 0, Offset: tx.Offset(), Size: tx.Size()},
			Local: local, Remote: remote, CutThrough: true, Segment: seg,
		}
	}
	// Each end gets an eventfd of its own that wakes the other app
	// (fifo.PeerSignal), never the eventfd the daemon writes: a shared
	// open file would let a hostile app make the daemon's writes block.
	toSrv, err := fifo.PeerSignal(srvWake.fd)
	if err != nil {
		withdraw()
		return nil, nil, fmt.Errorf("connect %s: %w", e.URI(), err)
	}
	defer unix.Close(toSrv)
	toMe, err := fifo.PeerSignal(myWake.fd)
	if err != nil {
		withdraw()
		return nil, nil, fmt.Errorf("connect %s: %w", e.URI(), err)
	}
	defer unix.Close(toMe)
	fds, err := h.dupFDs(ct.seg.FD(), toSrv)
	if err != nil {
		withdraw()
		return nil, nil, fmt.Errorf("connect %s: %w", e.URI(), err)
	}
	peerLocal := flow.Endpoint{Transport: e.Transport}
	// The notice goes only while the listening app's queue has room to
	// spare: a burst of connects waits for it (this connect's request, no
	// other), a while; a flood, which another app
	// causes, is refused to that app instead of overflowing the listening
	// app's queue, which would drop it with all its sessions.
	if err := server.c.TrySend(d.ctConnectWait(), &api.Accepted{Listener: acc.Listener, SessionInfo: info(acc, remote, peerLocal)},
		ct.seg.FD(), toMe); err != nil {
		// fds, the reply's, are closed with the next request's (h.sent).
		withdraw()
		d.log.Debug("cut-through connect refused", "conn", h.id, "listener_conn", server.id, "err", err)
		return nil, nil, fmt.Errorf("connect %s: the listening app has not taken the connections before this one: %w", e.URI(), flow.ErrRefused)
	}
	return &api.ConnectReply{SessionInfo: info(con, peerLocal, remote)}, fds, nil
}

// ctConnectWait is how long a cut-through connect waits for room for its
// Accepted notice in the listening app's queue: a quarter of the control
// connections' send timeout (500 ms by default), far more than a burst of
// hundreds of connects takes to go out to an app that reads, and short of
// the send timeout after which one that does not is dropped.
func (d *Daemon) ctConnectWait() time.Duration {
	t := d.cfg.Control.SendTimeout
	if t <= 0 {
		t = api.DefaultSendTimeout
	}
	return t / 4
}
