package app

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// PacketConn is a UDP listener in datagram mode: it receives the datagrams
// the datapath delivers from the wire into its fifo pair, and the
// datagrams of the cut-through sessions other apps open to it. It
// implements net.PacketConn; ReadBatch is the zero-copy batch read.
//
// Lock order: rd.mu, wr.mu, mu.
type PacketConn struct {
	a     *App
	binds []wireBind // one per family: two for a listener of both families
	laddr net.Addr
	// llZone is the zone of a link-local sender's address (ReadFrom,
	// ReadBatch), as the kernel gives its scope: the zone the URI gave,
	// or the index of the namespace's interface (the app's netns may not
	// be the daemon's, where the interface has its name). "" for none.
	llZone string

	rd, wr half
	done   chan struct{}
	once   sync.Once

	mu        sync.Mutex           // guards peers and closing
	peers     map[flow.Handle]*end // cut-through sessions accepted on the listener
	closing   bool
	ends      atomic.Pointer[[]*end] // wire and peers, rebuilt under mu: the readers' list
	broken    atomic.Uint64          // cut-through sessions ended for a broken fifo (BrokenPeers)
	peerDrops atomic.Uint64          // datagrams to a cut-through peer whose fifo was full (PeerDrops)
	reap      atomic.Bool            // a peer went away: the next read drops it once drained

	df   atomic.Bool // SetDontFragment: datagrams to the wire go with fifo.DgramFlagDontFragment
	pmtu pmtuCache   // path MTUs by destination, for don't-fragment writes (checkPath)

	// Read state, guarded by rd.mu.
	next  int              // round-robin position in ends
	hdr   fifo.DgramHeader // scratch header of ReadFrom
	held  *end             // the end ReadBatch peeked into
	heldN int              // bytes to release from held
}

// wireBind is one bind of a PacketConn.
type wireBind struct {
	bound
	local netip.AddrPort // the source of what it sends
	wire  *end           // the datapath's fifo pair; nil without a datapath
}

// Message is one datagram returned by ReadBatch. Payload (and More, for a
// datagram that wraps around the end of the fifo) point into shared
// memory: they are valid until the next ReadBatch, ReadFrom (or
// ReadFromUDPAddrPort), Release or Close. A cut-through peer that
// misbehaves can change them after it queued them: copy what must be
// kept.
type Message struct {
	Payload []byte         // the datagram, or its first part when it wraps
	More    []byte         // the rest of a wrapping datagram; nil otherwise
	Remote  netip.AddrPort // the sender; invalid for a cut-through peer
	Session flow.Handle    // the cut-through session it came on; 0 from the wire
}

// Len returns the datagram's length.
func (m *Message) Len() int { return len(m.Payload) + len(m.More) }

// ListenPacket binds a UDP listener (udp://ADDR:PORT) and returns it as a
// net.PacketConn, which is a *PacketConn. A URI with no address
// (udp://:PORT) listens on both families, as net.ListenPacket("udp",
// ":PORT") does: it binds 0.0.0.0 and [::] on one port, LocalAddr is
// [::]:PORT, and WriteTo sends each datagram from the bind of its
// destination's family. A host name (udp://localhost:PORT) binds one of
// its addresses, as Listen does.
func (a *App) ListenPacket(uri string) (net.PacketConn, error) {
	p, err := a.ListenPacketConn(uri)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ListenPacketConn is ListenPacket returning the *PacketConn.
func (a *App) ListenPacketConn(uri string) (*PacketConn, error) {
	p, err := a.listenPacket(uri)
	if err != nil {
		return nil, bindSyscallError(listenError(uri, err))
	}
	return p, nil
}

func (a *App) listenPacket(uri string) (*PacketConn, error) {
	uris, eps, zone, err := listenURIs(uri)
	if err != nil {
		// The forms a URI error offers: ListenPacket's alone.
		if e, ok := err.(*Error); ok && errors.Is(err, flow.ErrInvalidURI) {
			e.Msg = strings.ReplaceAll(e.Msg, "tcp://ADDR:PORT or udp://ADDR:PORT", "udp://ADDR:PORT")
		}
		return nil, err
	}
	if eps[0].Transport != flow.TransportUDP {
		return nil, opError("listen", uri, fmt.Errorf("ListenPacket takes udp:// URIs: %w", flow.ErrNotSupported))
	}
	for i, ep := range eps {
		// A multicast address binds the wildcard of its family on that
		// port, as net.ListenPacket does: the listener receives what
		// comes to the port, a group's datagrams once it joined the
		// group (JoinGroup).
		if ep.Addr.IsMulticast() {
			eps[i].Addr = unspecified(ep.Addr)
			uris[i] = eps[i].URI()
		}
	}
	if err := a.enter(); err != nil {
		return nil, opError("listen", uri, err)
	}
	defer a.leave()
	a.beginBind()
	defer a.endBind() // after the acceptors are registered: the accepts that came meanwhile
	bs, err := a.bindAll(uris, eps)
	if err != nil {
		return nil, err
	}
	p := &PacketConn{a: a, rd: newHalf(), wr: newHalf(), done: make(chan struct{}), peers: map[flow.Handle]*end{}}
	for _, b := range bs {
		r := b.r
		wb := wireBind{bound: b, local: addrPortOf(r.Local)}
		if wb.local.Port() == 0 {
			wb.local = netip.AddrPortFrom(wb.local.Addr(), b.ep.Port)
		}
		if r.Rx.Size > 0 {
			rx, tx, ok, err := a.segFifos(r.Rx, r.Tx)
			if err == nil && !ok {
				err = fmt.Errorf("%w: the listener's fifos are in a segment this app does not have", ErrProtocol)
			}
			if err != nil {
				for _, b := range bs {
					a.unbind(b.h)
				}
				return nil, opError("listen", uri, err)
			}
			wb.wire = &end{h: r.Handle, rx: rx, tx: tx, signalFD: a.kick(r.Worker), sleeping: a.sleepFlag(r.Worker), datapath: true, dgram: true}
		}
		p.binds = append(p.binds, wb)
	}
	p.laddr = zonedAddr(endpointAddr(lastBind(bs).ep), zone)
	p.llZone = linkZone(zone, lastBind(bs))
	p.rebuildLocked()
	for _, b := range p.binds {
		a.addAcceptor(b.h, b.ep, p)
	}
	if !a.track(p) {
		p.Close()
		return nil, opError("listen", uri, closedError("app closed"))
	}
	return p, nil
}

// wireFor returns the bind that sends to remote: the one of its family
// when the listener has both.
func (p *PacketConn) wireFor(remote netip.AddrPort) *wireBind {
	if len(p.binds) > 1 && !remote.Addr().Unmap().Is4() {
		return &p.binds[1]
	}
	return &p.binds[0]
}

// boundAs reports whether h is one of the listener's binds.
func (p *PacketConn) boundAs(h flow.Handle) bool {
	for _, b := range p.binds {
		if b.h == h {
			return true
		}
	}
	return false
}

func (a *App) unbind(h flow.Handle) error {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_, fds, err := a.call(ctx, &api.Unbind{Handle: h})
	api.CloseFDs(fds)
	return err
}

// rebuildLocked republishes the readers' list of ends. p.mu is held (or p
// is not shared yet).
func (p *PacketConn) rebuildLocked() {
	ends := make([]*end, 0, len(p.binds)+len(p.peers))
	for _, b := range p.binds {
		if b.wire != nil {
			ends = append(ends, b.wire)
		}
	}
	for _, e := range p.peers {
		ends = append(ends, e)
	}
	p.ends.Store(&ends)
}

// accept takes a cut-through session opened to the listener.
func (p *PacketConn) accept(e *end, info *api.SessionInfo) bool {
	if info != nil {
		e.dialed = netip.AddrPortFrom(info.Local.Addr, info.Local.Port)
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return false
	}
	p.peers[e.h] = e
	p.rebuildLocked()
	p.mu.Unlock()
	if !p.a.register(e.h, p) {
		e.gone.Store(true)
		p.reap.Store(true)
	}
	p.rd.poke()
	return true
}

// peerClosed marks a cut-through peer gone; the readers drop it once
// everything it sent was read.
func (p *PacketConn) peerClosed(h flow.Handle) {
	p.mu.Lock()
	e := p.peers[h]
	p.mu.Unlock()
	if e != nil {
		e.gone.Store(true)
		p.reapSoon()
	}
}

// LocalAddr returns the address the listener is bound to.
func (p *PacketConn) LocalAddr() net.Addr { return p.laddr }

// Handle returns the listener's handle; for a listener of both families,
// its IPv4 bind's (Handles has both).
func (p *PacketConn) Handle() flow.Handle { return p.binds[0].h }

// Handles returns the handles of the listener's binds: one, or for a
// listener of both families, its IPv4 bind's and its IPv6 bind's.
func (p *PacketConn) Handles() []flow.Handle { return handles(p.binds) }

// SetDeadline sets the read and write deadlines. After Close it fails
// with an error wrapping net.ErrClosed, as the other setters do.
func (p *PacketConn) SetDeadline(t time.Time) error {
	if err := p.setClosed(); err != nil {
		return err
	}
	p.rd.dl.set(t)
	p.wr.dl.set(t)
	return nil
}

// SetReadDeadline sets the deadline of ReadFrom and ReadBatch.
func (p *PacketConn) SetReadDeadline(t time.Time) error {
	if err := p.setClosed(); err != nil {
		return err
	}
	p.rd.dl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline of WriteTo.
func (p *PacketConn) SetWriteDeadline(t time.Time) error {
	if err := p.setClosed(); err != nil {
		return err
	}
	p.wr.dl.set(t)
	return nil
}

// setClosed is the error of a setter on a closed PacketConn (nil while
// open), as a net.PacketConn's setters fail after Close: the local
// address in Addr, no Source.
func (p *PacketConn) setClosed() error {
	if isClosed(p.done) {
		return addrError("set", p.laddr, net.ErrClosed)
	}
	return nil
}

// pickLocked returns an end with data to read, round robin, and drops the
// cut-through peers that went away and have nothing left. rd.mu is held.
func (p *PacketConn) pickLocked() *end {
	p.reapGoneLocked()
	ends := *p.ends.Load()
	n := len(ends)
	for i := range n {
		e := ends[(p.next+i)%n]
		if e.readable() && !e.broken.Load() {
			p.next = (p.next + i + 1) % n
			return e
		}
	}
	return nil
}

// reapGoneLocked drops the cut-through peers that went away and have
// nothing left to read (a broken one's bytes are never read), except the
// one whose datagrams the last ReadBatch holds. rd.mu is held.
func (p *PacketConn) reapGoneLocked() {
	if !p.reap.Swap(false) {
		return
	}
	for _, e := range *p.ends.Load() {
		if !e.datapath && e.gone.Load() {
			if (e.readable() && !e.broken.Load()) || e == p.held {
				p.reap.Store(true) // drop it once drained or released
				continue
			}
			p.reapLocked(e)
		}
	}
}

// reapSoon has a gone cut-through peer dropped now rather than at the
// next read: a listener nobody reads any more would otherwise keep the
// session's segment mapped and its eventfd open until it closes. A
// reader asleep holding rd.mu is poked and drops it itself; one busy
// reading lets go of rd.mu within moments. It is not called with rd.mu
// held.
func (p *PacketConn) reapSoon() {
	p.reap.Store(true)
	p.rd.poke()
	go func() {
		for range 200 {
			if p.rd.mu.TryLock() {
				if !isClosed(p.done) {
					p.reapGoneLocked()
				}
				p.rd.mu.Unlock()
				return
			}
			if !p.reap.Load() {
				return // a reader dropped it
			}
			time.Sleep(time.Millisecond)
		}
	}()
}

// reapLocked removes a gone cut-through peer. rd.mu is held.
func (p *PacketConn) reapLocked(e *end) {
	p.wr.mu.Lock()
	p.mu.Lock()
	if p.peers[e.h] == e {
		delete(p.peers, e.h)
		p.rebuildLocked()
	}
	p.mu.Unlock()
	p.a.unregister(e.h, p)
	p.a.closeEnd(e)
	p.wr.mu.Unlock()
}

// dropBroken ends cut-through session e, whose rx fifo could not be read
// or tx fifo written (fifo.ErrCorrupt: its peer, which shares the fifos'
// memory, broke their indices or a record): the readers pass it over from
// now on, the daemon is asked to end it, and once it has the readers drop
// it with what the listener held of it, as a peer gone. The daemon tells
// the other end alone of a Disconnect, so no event (peerClosed) marks e
// gone: its reply does. So another app's bad writes cost the listener
// that session alone, and its reads and writes go on with its other ends.
// Counted in BrokenPeers. It touches atomics alone: a reader calls it
// with rd.mu held, a writer without.
func (p *PacketConn) dropBroken(e *end) {
	if e.broken.Swap(true) {
		return
	}
	p.broken.Add(1)
	go func() {
		if p.a.endSession(&api.Disconnect{Handle: e.h}) != nil {
			return // passed over still; Close disconnects it again
		}
		e.gone.Store(true)
		p.reapSoon()
	}()
}

// BrokenPeers counts the cut-through sessions the listener ended because
// their peer broke the fifos they share (dropBroken).
func (p *PacketConn) BrokenPeers() uint64 { return p.broken.Load() }

// waitReadLocked sleeps until some end may have data. rd.mu is held.
func (p *PacketConn) waitReadLocked() error {
	for sp := (spinner{}); sp.next(p.a); {
		if p.reap.Load() || isClosed(p.done) {
			sp.hit(p.a)
			return nil
		}
		for _, e := range *p.ends.Load() {
			if e.readable() && !e.broken.Load() {
				sp.hit(p.a)
				return nil
			}
		}
	}
	// The ends are loaded after arming: one added since (an accepted
	// cut-through session) pokes the broadcast channel this sleeper holds.
	s := p.rd.arm(p.a, nil, nil) // any of its ends
	ends := *p.ends.Load()
	for _, e := range ends {
		e.rx.ClearEvent()
	}
	// A cut-through peer gone since the caller looked poked the
	// broadcast channel before this sleeper held it: look once more
	// (pickLocked reaps the peer).
	if p.reap.Load() {
		p.rd.disarm(p.a, s)
		return nil
	}
	// A broken end's bytes are never read (pickLocked passes it over):
	// they must not keep the caller from sleeping.
	for _, e := range ends {
		if e.readable() && !e.broken.Load() {
			p.rd.disarm(p.a, s)
			return nil
		}
	}
	p.a.reads.sleeps.Add(1)
	return p.rd.sleep(p.a, p.done, 0, s)
}

// releaseLocked hands back what the last ReadBatch peeked. rd.mu is held.
func (p *PacketConn) releaseLocked() {
	if p.held == nil {
		return
	}
	if err := p.held.rx.Release(p.heldN); err == nil {
		p.held.afterDequeue(p.heldN)
	}
	p.held, p.heldN = nil, 0
}

// Release hands back the datagrams of the last ReadBatch; the slices it
// returned become invalid. ReadBatch, ReadFrom, ReadFromUDPAddrPort and
// Close release too.
func (p *PacketConn) Release() {
	p.rd.mu.Lock()
	p.releaseLocked()
	p.reapGoneLocked()
	p.rd.mu.Unlock()
}

// ReadFrom reads one datagram into b (dropping what does not fit, as a
// UDP socket does). The address is a *net.UDPAddr for a datagram from the
// wire, a *CutThroughAddr for one from a cut-through session. A listener
// of both families (udp://:PORT) names an IPv4 sender by its IPv4-mapped
// IPv6 address (::ffff:10.0.0.1), as a dual-stack kernel socket does
// (ReadBatch's Message.Remote keeps the IPv4 address). As on an
// unconnected kernel socket, no asynchronous error fails it (see
// SetDontFragment).
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, e, from, err := p.read(b)
	if err != nil {
		return 0, nil, err
	}
	if e.datapath {
		return n, net.UDPAddrFromAddrPort(from), nil
	}
	return n, &CutThroughAddr{Session: e.h}, nil
}

// ReadFromUDPAddrPort is ReadFrom with the sender as a netip.AddrPort, as
// net.UDPConn's: it allocates nothing. A cut-through session's peer has no
// address (its datagrams never cross the wire): a datagram of one gives
// the zero AddrPort, as Message.Remote does. An app that serves
// cut-through peers answers them with ReadFrom and WriteTo, or ReadBatch.
func (p *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, e, from, err := p.read(b)
	if err != nil || !e.datapath {
		return n, netip.AddrPort{}, err
	}
	return n, from, nil
}

// read reads one datagram into b and returns the end it came from and,
// for a wire datagram, its sender. The sender is taken from p.hdr while
// rd.mu is held: once it is released, a concurrent read overwrites
// p.hdr, and the datagram would be returned with another's sender.
func (p *PacketConn) read(b []byte) (int, *end, netip.AddrPort, error) {
	p.rd.mu.Lock()
	defer p.rd.mu.Unlock()
	p.releaseLocked()
	for {
		if err := p.rd.check(p.a, p.done); err != nil {
			return 0, nil, netip.AddrPort{}, netError("read", p.laddr, nil, err)
		}
		e := p.pickLocked()
		if e == nil {
			if err := p.waitReadLocked(); err != nil {
				return 0, nil, netip.AddrPort{}, netError("read", p.laddr, nil, err)
			}
			continue
		}
		n, ok, err := e.readDgram(b, &p.hdr)
		if err != nil {
			if !e.datapath {
				p.dropBroken(e)
				continue
			}
			return 0, nil, netip.AddrPort{}, netError("read", p.laddr, nil, err)
		}
		if ok {
			if !e.datapath && e.gone.Load() {
				p.reapGoneLocked() // the peer went: drop it if that was its last
			}
			var from netip.AddrPort
			if e.datapath {
				from = fromHeader(&p.hdr)
				if len(p.binds) > 1 && from.Addr().Is4() {
					// A listener of both families is a dual-stack socket
					// ([::]:PORT), whose IPv4 senders the kernel names
					// as IPv4-mapped IPv6 addresses.
					from = netip.AddrPortFrom(netip.AddrFrom16(from.Addr().As16()), from.Port())
				}
				from = p.zoned(from)
			}
			return n, e, from, nil
		}
	}
}

// zoned returns from with the listener's link zone when its address is
// IPv6 link-local, as a kernel socket names such a sender
// (fe80::1%eth0).
func (p *PacketConn) zoned(from netip.AddrPort) netip.AddrPort {
	if a := from.Addr(); p.llZone != "" && a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == "" {
		return netip.AddrPortFrom(a.WithZone(p.llZone), from.Port())
	}
	return from
}

// ReadBatch fills msgs with the datagrams queued on one of the listener's
// fifos, without copying them: the slices point into shared memory and
// stay valid until the next ReadBatch, Release, ReadFrom or Close, which
// hand the space back to the producer. It waits for at least one datagram
// (or the read deadline) and allocates nothing.
func (p *PacketConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	p.rd.mu.Lock()
	defer p.rd.mu.Unlock()
	p.releaseLocked()
	for {
		if err := p.rd.check(p.a, p.done); err != nil {
			return 0, netError("read", p.laddr, nil, err)
		}
		e := p.pickLocked()
		if e == nil {
			if err := p.waitReadLocked(); err != nil {
				return 0, netError("read", p.laddr, nil, err)
			}
			continue
		}
		n, used, err := peekBatch(e, msgs, e.datapath)
		if err != nil {
			if !e.datapath {
				p.dropBroken(e)
				continue
			}
			return 0, netError("read", p.laddr, nil, err)
		}
		if n > 0 {
			p.held, p.heldN = e, used
			if e.datapath && p.llZone != "" {
				for i := range msgs[:n] {
					msgs[i].Remote = p.zoned(msgs[i].Remote)
				}
			}
			return n, nil
		}
	}
}

// peekBatch parses the datagram records queued in e's rx fifo into msgs
// and returns how many, and how many bytes they take. Every length read
// from shared memory is checked against what is queued.
func peekBatch(e *end, msgs []Message, wire bool) (int, int, error) {
	a, b, err := e.rx.PeekSlices()
	if err == fifo.ErrEmpty {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	total := len(a) + len(b)
	off, n := 0, 0
	var hb [fifo.DgramHeaderSize]byte
	for n < len(msgs) && total-off >= fifo.DgramHeaderSize {
		copyAt(hb[:], a, b, off)
		l := binary.NativeEndian.Uint32(hb[fifo.DgramOffLen:])
		if uint64(l) > uint64(total-off-fifo.DgramHeaderSize) {
			return 0, 0, fmt.Errorf("datagram of %d bytes with %d queued: %w", l, total-off, fifo.ErrCorrupt)
		}
		rec := fifo.DgramRecordSize(int(l))
		if rec > total-off {
			return 0, 0, fmt.Errorf("datagram record of %d bytes with %d queued: %w", rec, total-off, fifo.ErrCorrupt)
		}
		m := &msgs[n]
		m.Payload, m.More = sliceAt(a, b, off+fifo.DgramHeaderSize, int(l))
		m.Remote, m.Session = netip.AddrPort{}, 0
		if wire {
			fam := hb[fifo.DgramOffFamily]
			if fam == flow.Family4 || fam == flow.Family6 {
				m.Remote = netip.AddrPortFrom(flow.AddrFrom([16]byte(hb[fifo.DgramOffRemote:fifo.DgramOffRemote+16]), fam),
					binary.NativeEndian.Uint16(hb[fifo.DgramOffRemotePort:]))
			}
		} else {
			m.Session = e.h
		}
		off += rec
		n++
	}
	if n == 0 && total > 0 {
		return 0, 0, fmt.Errorf("%d bytes queued, less than a datagram header: %w", total, fifo.ErrCorrupt)
	}
	return n, off, nil
}

// copyAt copies len(dst) bytes at offset off of the concatenation a+b.
func copyAt(dst, a, b []byte, off int) {
	if off < len(a) {
		n := copy(dst, a[off:])
		if n < len(dst) {
			copy(dst[n:], b)
		}
		return
	}
	copy(dst, b[off-len(a):])
}

// sliceAt returns the n bytes at offset off of the concatenation a+b, as
// at most two slices.
func sliceAt(a, b []byte, off, n int) ([]byte, []byte) {
	if off >= len(a) {
		o := off - len(a)
		return b[o : o+n : o+n], nil
	}
	if off+n <= len(a) {
		return a[off : off+n : off+n], nil
	}
	rest := off + n - len(a)
	return a[off:len(a):len(a)], b[:rest:rest]
}

// WriteTo sends one datagram: to the wire through the datapath for a
// *net.UDPAddr, or on the cut-through session a *CutThroughAddr names. To
// the wire it waits for room while the fifo is full; to a cut-through peer
// whose fifo is full it does not: the datagram is lost (PeerDrops), as
// one to a kernel socket whose receive buffer is full; to a cut-through
// peer that closed its session (or a session the listener no longer has)
// it is lost and WriteTo succeeds, as a kernel socket's WriteTo to a
// loopback port whose socket closed; one larger than IP
// of the session's family carries (MaxDatagram4, MaxDatagram6) fails with
// EMSGSIZE, as a kernel socket's to the loopback address the peer dialed.
// With SetDontFragment, a datagram to the wire larger than the path MTU
// fails with an error wrapping syscall.EMSGSIZE. A datagram to the wire
// addressed to the host itself (loopback, one of its addresses, the
// unspecified address or a *net.UDPAddr with no IP, which the kernel
// takes for the host) goes through the kernel to the host's socket of
// that port, as a kernel socket's, when the app runs in the network
// namespace of its namespace's interface; from another (a container's)
// the daemon drops it, counted as no_route. An errno of a failed write
// (EMSGSIZE, EINVAL for port 0 or a nil *net.UDPAddr, ENETUNREACH for an
// address of the other family) is held in an *os.SyscallError naming
// "sendto" under the *net.OpError, as the net package holds a kernel UDP
// socket's (WriteToUDPAddrPort too); an address of another type than
// *net.UDPAddr and *CutThroughAddr fails with a bare syscall.EINVAL, as
// a net.UDPConn's WriteTo refuses it.
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	switch x := addr.(type) {
	case *CutThroughAddr:
		if x == nil {
			addr = nil // the errors' text would print it: its String dereferences it
		}
		// Close forgets the sessions: after it, the write fails with
		// net.ErrClosed, not for want of the session.
		if err := p.wr.check(p.a, p.done); err != nil {
			return 0, netError("write", p.laddr, addr, err)
		}
		if x == nil {
			// As to a nil *net.UDPAddr.
			return 0, netError("write", p.laddr, nil, syscallError("sendto", errNoAddress))
		}
		p.mu.Lock()
		e, closing := p.peers[x.Session], p.closing
		p.mu.Unlock()
		if closing {
			// Close, since the look above, forgets the sessions.
			return 0, netError("write", p.laddr, addr, net.ErrClosed)
		}
		if e == nil {
			// A session the listener forgot (its peer closed it, and a
			// read dropped it) or never had: the datagram is lost, as
			// one a kernel socket sends to a loopback port nobody has,
			// whose port unreachable fails no call of an unconnected
			// socket. No larger than the listener's family carries.
			if err := checkDgramSize(len(b), p.binds[len(p.binds)-1].local); err != nil {
				return 0, netError("write", p.laddr, addr, syscallError("sendto", err))
			}
			return len(b), nil
		}
		return p.write(b, e, nil, netip.AddrPort{}, addr)
	case *net.UDPAddr:
		if x == nil {
			// Refused before anything else, its error naming no
			// address, as package net refuses it.
			return 0, netError("write", p.laddr, nil, syscallError("sendto", errNoAddress))
		}
		remote := x.AddrPort()
		if len(x.IP) == 0 {
			// No IP: the unspecified address of the socket's family,
			// as package net sends it (the IPv6 one for a listener of
			// both families, a dual-stack socket), which the kernel
			// takes for this host.
			remote = netip.AddrPortFrom(unspecified(p.binds[len(p.binds)-1].local.Addr()), uint16(x.Port))
		}
		wb := p.wireFor(remote)
		return p.write(b, wb.wire, wb, remote, addr)
	}
	// EINVAL too, as a net.UDPConn's WriteTo refuses an address of
	// another type.
	return 0, netError("write", p.laddr, addr, syscall.EINVAL)
}

// WriteToUDPAddrPort is WriteTo of a datagram to the wire, addressed as a
// netip.AddrPort, as net.UDPConn's: it allocates nothing. The zero
// AddrPort (a cut-through peer's, from ReadFromUDPAddrPort) is refused,
// as WriteTo refuses an invalid address.
func (p *PacketConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	wb := p.wireFor(addr)
	return p.write(b, wb.wire, wb, addr, nil)
}

// addrPortAddr is the destination a WriteToUDPAddrPort's error names, as
// package net names it: the netip.AddrPort as given, an IPv4-mapped
// address printed as one.
type addrPortAddr struct{ netip.AddrPort }

// Network returns "udp".
func (addrPortAddr) Network() string { return "udp" }

// write sends b on e: to remote on the wire end of bind wb, or on a
// cut-through peer's (wb nil). addr is the caller's address for errors;
// nil names remote as WriteToUDPAddrPort's errors do.
func (p *PacketConn) write(b []byte, e *end, wb *wireBind, remote netip.AddrPort, addr net.Addr) (int, error) {
	// An errno (EMSGSIZE, EINVAL, ENETUNREACH) is held in an
	// *os.SyscallError naming "sendto", as the net package holds a kernel
	// UDP socket's for WriteTo and WriteToUDPAddrPort; net.ErrClosed and
	// deadlines are not.
	fail := func(err error) (int, error) {
		if addr == nil { // WriteToUDPAddrPort's: made here, not per datagram
			addr = addrPortAddr{remote}
		}
		return 0, netError("write", p.laddr, addr, syscallError("sendto", err))
	}
	// Closed, or past the write deadline, the write fails so before its
	// destination and size are looked at, as sendto on a kernel socket
	// does (a program that stops at net.ErrClosed must see it).
	if err := p.wr.check(p.a, p.done); err != nil {
		return fail(err)
	}
	if e == nil {
		return fail(ErrNoDatapath)
	}
	if !e.datapath {
		// No larger than IP of the session's family carries, as a
		// kernel socket's datagram to the loopback address the peer
		// dialed (EMSGSIZE), however much its fifo holds.
		if err := checkDgramSize(len(b), e.dialed); err != nil {
			return fail(err)
		}
	}
	local := p.binds[0].local
	if e.datapath {
		local = wb.local
		if err := checkDest(wb.ep, remote, len(b)); err != nil {
			return fail(err)
		}
		if p.df.Load() {
			if err := p.a.checkPath(&p.pmtu, wb.h, remote.Addr(), len(b), &p.wr, p.done); err != nil {
				return fail(err)
			}
		}
	}
	p.wr.mu.Lock()
	defer p.wr.mu.Unlock()
	// Close holds wr.mu while it forgets the sessions: a write that
	// waited for it fails with net.ErrClosed, not for a peer gone.
	if err := p.wr.check(p.a, p.done); err != nil {
		return fail(err)
	}
	if !e.datapath {
		p.mu.Lock()
		alive := p.peers[e.h] == e
		p.mu.Unlock()
		if !alive {
			return len(b), nil // the peer is gone: lost, as below
		}
	}
	var hdr fifo.DgramHeader
	toHeader(&hdr, local, remote)
	if e.datapath && p.df.Load() {
		hdr.Flags = fifo.DgramFlagDontFragment
	}
	if !e.datapath {
		// A cut-through peer's fifo full: the datagram is lost, as one
		// to a kernel socket whose receive buffer is full, and the
		// listener does not wait on that peer (one that never reads
		// would hold up its writes to every other).
		// A peer gone: the datagram is lost too, as one a kernel
		// socket sends to a loopback port whose socket closed (the port
		// unreachable it draws fails no call of an unconnected socket).
		switch err := enqueueDgram(e, &hdr, b); {
		case err == nil, err == errPeerClosed:
		case err == fifo.ErrNoSpace:
			p.peerDrops.Add(1)
		case errors.Is(err, fifo.ErrCorrupt):
			// The peer broke the fifo it reads: the session ends, as
			// one whose rx fifo a read finds broken, and the datagram is
			// lost, as one to a peer gone. A server's writes go on.
			p.dropBroken(e)
		default:
			return fail(err)
		}
		return len(b), nil
	}
	if err := writeDgram(p.a, &p.wr, p.done, e, &hdr, b); err != nil {
		return fail(err)
	}
	return len(b), nil
}

// PeerDrops counts the datagrams WriteTo dropped because the cut-through
// peer's fifo was full (its app not reading), as a kernel UDP socket's
// datagrams to a full receiver are lost.
func (p *PacketConn) PeerDrops() uint64 { return p.peerDrops.Load() }

// Close unbinds the listener and closes its cut-through sessions. A second
// Close fails with an error wrapping net.ErrClosed, as a net.PacketConn's
// does.
func (p *PacketConn) Close() error {
	var err error
	first := false
	p.once.Do(func() {
		first = true
		close(p.done)
		p.a.delAcceptor(p)
		p.mu.Lock()
		p.closing = true
		peers := make([]*end, 0, len(p.peers))
		for _, e := range p.peers {
			peers = append(peers, e)
		}
		p.mu.Unlock()
		// A read or write under way ends first; those that come after
		// see done and fail with net.ErrClosed, so the round trips
		// below hold neither half: a read or write blocked as Close
		// began returns as it wakes, not when the daemon answered.
		p.rd.mu.Lock()
		p.wr.mu.Lock()
		p.held = nil
		p.wr.mu.Unlock()
		p.rd.mu.Unlock()
		if p.a.stopped() == nil {
			for _, b := range p.binds {
				p.a.waitTxTaken(b.wire)
			}
			for _, b := range p.binds {
				err = errors.Join(err, p.a.unbind(b.h))
			}
			for _, e := range peers {
				if !e.gone.Load() {
					p.a.disconnect(e.h)
				}
			}
		}
		p.a.sync(func() {
			for _, e := range peers {
				p.a.unregister(e.h, p)
			}
		})
		p.rd.mu.Lock()
		p.wr.mu.Lock()
		p.mu.Lock()
		for _, e := range peers {
			p.a.closeEnd(e)
		}
		for _, b := range p.binds {
			if b.wire != nil {
				p.a.closeEnd(b.wire) // its fifos go with the App's memory
			}
		}
		p.peers = map[flow.Handle]*end{}
		p.rebuildLocked()
		p.mu.Unlock()
		p.wr.mu.Unlock()
		p.rd.mu.Unlock()
		p.rd.dl.stop()
		p.wr.dl.stop()
		p.a.untrack(p) // last, as a Conn's Close does
	})
	if !first {
		return netError("close", p.laddr, nil, net.ErrClosed)
	}
	if err != nil {
		return netError("close", p.laddr, nil, err)
	}
	return nil
}
