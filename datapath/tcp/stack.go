package tcp

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const nicID tcpip.NICID = 1

// Options configure a Stack. Zero fields take the defaults named.
type Options struct {
	// MTU of the link, IP header included (1500).
	MTU uint32
	// RXChecksumOffload makes gVisor trust inbound checksums (the link
	// verified them). Off: gVisor verifies every checksum in software.
	RXChecksumOffload bool
	// HostGSO says the Writer hands packets to a link that segments and
	// checksums them as the kernel does a packet with a virtio-net header
	// (Packet.VirtioNetHdr): the TCP sender then builds segments of up to
	// 64 KiB and leaves their checksum partial (the pseudo-header sum).
	// Off: every packet is at most the MTU with its checksum computed in
	// software (gVisor's own segmentation).
	HostGSO bool
	// Pumps is the number of goroutines moving data between gVisor
	// endpoints and fifos (min(GOMAXPROCS, 4)). A Conn is served by one.
	Pumps int
	// MaxConns caps the live Conns of the Stack (65536), and
	// MaxConnsPerOwner those of one owner (4096).
	MaxConns, MaxConnsPerOwner int
	// MaxBacklog caps a listener's backlog (1024); DefaultBacklog is used
	// when Listen gets 0 (128).
	MaxBacklog, DefaultBacklog int
	// SendBuffer and ReceiveBuffer are each endpoint's gVisor buffer sizes
	// in bytes (gVisor's defaults, 1 MiB each); the receive buffer bounds
	// the advertised window on top of what the rx fifo holds.
	SendBuffer, ReceiveBuffer int
	// BufferBytes bounds the gVisor send and receive buffers of all Conns
	// together, in bytes (0: an eighth of the machine's memory, at least
	// 256 MiB; negative: no bound); GroupBufferBytes those of the Conns
	// of one group of owners (0: an eighth of BufferBytes; negative: no
	// bound). A Conn past its group's bound gets ClampedBuffer buffers,
	// up to twice the bound; one past that, or that does not fit under
	// BufferBytes even so, is refused (buffers.go).
	BufferBytes, GroupBufferBytes int64
	// BufferGroup maps an owner to its group for GroupBufferBytes (nil:
	// each owner is a group of its own).
	BufferGroup func(owner uint64) uint64
	// ConnectTimeout bounds an active open (30s): ETIMEDOUT after it.
	ConnectTimeout time.Duration
	// CloseTimeout bounds how long a graceful Close waits, while its tx
	// fifo drains, for a peer that acknowledges nothing (a window kept
	// shut: 60s); then the connection is reset. Each acknowledgement
	// starts it anew. After the Conn finished, an orphan whose peer
	// acknowledges nothing for as long is reset too (orphans.go).
	CloseTimeout time.Duration
	// TimeWait is how long a closed connection stays in TIME-WAIT in
	// gVisor (gVisor's default, 60s).
	TimeWait time.Duration
	// FinWait2Timeout bounds how long a closed connection waits in
	// FIN-WAIT-2 for the peer's FIN (gVisor's TCP_LINGER2 default, 60s).
	FinWait2Timeout time.Duration
	// AckDelay is the longest the link holds back a bare acknowledgement
	// of one segment, for the connection's next segment to carry it
	// (DefaultAckDelay; negative: every acknowledgement goes at once).
	// See ack.go.
	AckDelay time.Duration
	// TTL and HopLimit are the IPv4 TTL and the IPv6 hop limit of the
	// segments sent (0: gVisor's 64): the namespace's
	// net.ipv4.ip_default_ttl and the interface's IPv6 hop_limit, as the
	// kernel's sockets there use.
	TTL, HopLimit uint8
}

func (o *Options) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	def(&o.Pumps, min(runtime.GOMAXPROCS(0), 4))
	def(&o.MaxConns, 65536)
	def(&o.MaxConnsPerOwner, 4096)
	def(&o.MaxBacklog, 1024)
	def(&o.DefaultBacklog, 128)
	switch {
	case o.BufferBytes == 0:
		o.BufferBytes = defaultBufferBytes()
	case o.BufferBytes < 0:
		o.BufferBytes = math.MaxInt64
	}
	switch {
	case o.GroupBufferBytes == 0:
		o.GroupBufferBytes = o.BufferBytes / 8
	case o.GroupBufferBytes < 0:
		o.GroupBufferBytes = math.MaxInt64
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 60 * time.Second
	}
	switch {
	case o.AckDelay == 0:
		o.AckDelay = DefaultAckDelay
	case o.AckDelay < 0:
		o.AckDelay = 0
	}
}

// Stack is one FIB's TCP: a gVisor stack with IPv4, IPv6 and TCP, one NIC
// (its LinkEndpoint), the addresses the caller adds, and a default route per
// family out of that NIC. Close releases it.
type Stack struct {
	opts  Options
	gs    *stack.Stack
	link  *LinkEndpoint
	pumps []*pump

	routeMu sync.Mutex // held by a connect over a route of its own (connectVia)

	mu        sync.Mutex // guards the fields below
	closed    bool
	conns     map[*Conn]struct{}
	owners    map[uint64]int
	listeners map[*Listener]struct{}
	// The Conns' gVisor buffer sizes, in all and by owner, and the
	// Conns clamped and growths held back by the bounds (buffers.go).
	bufBytes            int64
	groupBuf            map[uint64]int64
	bufClamped, bufHeld uint64
	// The finished Conns gVisor still delivers for, and their sweep's
	// timer while one is scheduled (orphans.go).
	orphans      map[*Conn]*orphan
	sweep        *time.Timer
	sweepWG      sync.WaitGroup // the sweep scheduled or running
	orphansReset atomic.Uint64  // orphans reset: the peer took nothing for CloseTimeout

	nextID         atomic.Uint64
	refused        atomic.Uint64 // connections refused by limits
	abortedOnClose atomic.Uint64 // Conns reset at their app's Close: data unread, or data after
	pumpWG         sync.WaitGroup
	connWG         sync.WaitGroup // live Conns and Listeners
	closedCh       chan struct{}
}

// NewStack makes a Stack whose outbound packets go to w.
func NewStack(w Writer, opts Options) (*Stack, error) {
	if w == nil {
		return nil, errors.New("new stack: nil writer")
	}
	opts.setDefaults()
	gs := stack.New(stack.Options{
		// Zero options: no DAD, no router solicitation, no MLD or IGMP,
		// no SLAAC; the kernel does all of that for the host.
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocolWithOptions(ipv4.Options{}), ipv6.NewProtocolWithOptions(ipv6.Options{})},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	s := &Stack{
		opts:      opts,
		gs:        gs,
		link:      newLinkEndpoint(w, opts.MTU, opts.RXChecksumOffload, opts.HostGSO, opts.AckDelay),
		conns:     make(map[*Conn]struct{}),
		owners:    make(map[uint64]int),
		groupBuf:  make(map[uint64]int64),
		orphans:   make(map[*Conn]*orphan),
		listeners: make(map[*Listener]struct{}),
		closedCh:  make(chan struct{}),
	}
	fail := func(what string, err tcpip.Error) (*Stack, error) {
		gs.Destroy()
		return nil, fmt.Errorf("new stack: %s: %s", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enable sack", err)
	}
	// RACK off: loss is found by SACK and duplicate acknowledgements
	// (RFC 6675), as the package doc's measurements say.
	recovery := tcpip.TCPRecovery(0)
	if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &recovery); err != nil {
		return fail("set loss recovery", err)
	}
	if opts.TimeWait > 0 {
		tw := tcpip.TCPTimeWaitTimeoutOption(opts.TimeWait)
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &tw); err != nil {
			return fail("set time-wait", err)
		}
	}
	if opts.FinWait2Timeout > 0 {
		lt := tcpip.TCPLingerTimeoutOption(opts.FinWait2Timeout)
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &lt); err != nil {
			return fail("set fin-wait-2 timeout", err)
		}
	}
	if opts.SendBuffer > 0 {
		o := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: opts.SendBuffer, Max: max(opts.SendBuffer, tcp.MaxBufferSize)}
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &o); err != nil {
			return fail("set send buffer", err)
		}
	}
	if opts.ReceiveBuffer > 0 {
		o := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: opts.ReceiveBuffer, Max: max(opts.ReceiveBuffer, tcp.MaxBufferSize)}
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &o); err != nil {
			return fail("set receive buffer", err)
		}
	}
	for _, h := range []struct {
		proto tcpip.NetworkProtocolNumber
		v     uint8
	}{{ipv4.ProtocolNumber, opts.TTL}, {ipv6.ProtocolNumber, opts.HopLimit}} {
		if h.v == 0 {
			continue
		}
		ttl := tcpip.DefaultTTLOption(h.v)
		if err := gs.SetNetworkProtocolOption(h.proto, &ttl); err != nil {
			return fail("set the default TTL", err)
		}
	}
	if err := gs.CreateNICWithOptions(nicID, s.link, stack.NICOptions{QDisc: directQDisc{s.link}}); err != nil {
		return fail("create nic", err)
	}
	gs.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	for range opts.Pumps {
		p := newPump()
		s.pumps = append(s.pumps, p)
		s.pumpWG.Add(1)
		go func() {
			defer s.pumpWG.Done()
			p.run()
		}()
	}
	return s, nil
}

// Link returns the Stack's link endpoint, where the workers inject inbound
// packets.
func (s *Stack) Link() *LinkEndpoint { return s.link }

// SetMTU gives the link a new MTU. Connections opened from then on take
// their MSS from it. A smaller one also lowers the MSS of the open
// connections, as Linux's TCP sizes every segment by the route's MTU: each
// endpoint hears it as gVisor's IP layer would tell it of a Packet Too Big
// message (its path MTU discovery), and splits what it has yet to send or
// must send again. gVisor never raises an open connection's MSS, so a
// larger MTU serves new connections alone.
func (s *Stack) SetMTU(mtu uint32) {
	old := s.link.MTU()
	s.link.SetMTU(mtu)
	if mtu >= old {
		return
	}
	for _, ep := range s.gs.RegisteredEndpoints() {
		if te, ok := ep.(*tcp.Endpoint); ok {
			ipHdr := uint32(header.IPv4MinimumSize)
			if info, ok := te.Info().(*stack.TransportEndpointInfo); ok && info.NetProto == ipv6.ProtocolNumber {
				ipHdr = header.IPv6MinimumSize
			}
			lowerMTU(te, mtu, ipHdr)
		}
	}
}

// LowerPathMTU tells the connection from local to remote that the path to
// remote takes IP packets of at most mtu bytes, as a router's ICMP message
// said: its MSS goes down to fit (never up). It reports whether the Stack
// has such a connection (a listener is none).
func (s *Stack) LowerPathMTU(local, remote netip.AddrPort, mtu uint32) bool {
	te, proto := s.find(local, remote)
	if te == nil {
		return false
	}
	ipHdr := uint32(header.IPv4MinimumSize)
	if proto == ipv6.ProtocolNumber {
		ipHdr = header.IPv6MinimumSize
	}
	lowerMTU(te, mtu, ipHdr)
	return true
}

// Unreachable is what is known of a connection's peer that cannot be
// reached: what a router's ICMP destination unreachable message says, or
// that the neighbour entry of its next hop failed (HostUnreachable).
type Unreachable uint8

const (
	NetUnreachable  Unreachable = iota + 1 // no route to its network: ENETUNREACH
	HostUnreachable                        // the host (or a filter on the way): EHOSTUNREACH
	PortUnreachable                        // nothing on the port: ECONNREFUSED
)

// Unreachable tells the connection from local to remote that its peer
// cannot be reached. A connection still in its handshake
// fails at once with the matching error, as Linux's does in SYN-SENT and
// SYN-RECV; an established one is left alone (Linux keeps such an error
// as a soft one). It reports whether a connecting connection took it.
func (s *Stack) Unreachable(local, remote netip.AddrPort, u Unreachable) bool {
	te, proto := s.find(local, remote)
	if te == nil {
		return false
	}
	switch tcp.EndpointState(te.State()) {
	case tcp.StateConnecting, tcp.StateSynSent, tcp.StateSynRecv:
	default:
		return false
	}
	var kind stack.TransportErrorKind
	switch u {
	case NetUnreachable:
		kind = stack.DestinationNetworkUnreachableTransportError
	case HostUnreachable:
		kind = stack.DestinationHostUnreachableTransportError
	case PortUnreachable:
		kind = stack.DestinationPortUnreachableTransportError
	default:
		return false
	}
	// gVisor reads the packet's network protocol (and its data, for an
	// endpoint that asked for IP_RECVERR, which none does here).
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{})
	pkt.NetworkProtocolNumber = proto
	te.HandleError(unreachable(kind), pkt)
	pkt.DecRef()
	return true
}

// find returns the TCP endpoint of the connection from local to remote
// (not a listener), and its network protocol.
func (s *Stack) find(local, remote netip.AddrPort) (*tcp.Endpoint, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if local.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	id := stack.TransportEndpointID{
		LocalPort: local.Port(), LocalAddress: tcpip.AddrFromSlice(local.Addr().AsSlice()),
		RemotePort: remote.Port(), RemoteAddress: tcpip.AddrFromSlice(remote.Addr().AsSlice()),
	}
	te, ok := s.gs.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
	if !ok || tcp.EndpointState(te.State()) == tcp.StateListen {
		return nil, proto
	}
	return te, proto
}

// unreachable is the transport error gVisor's IP layer hands a transport
// endpoint for a destination unreachable message of this kind.
type unreachable stack.TransportErrorKind

func (unreachable) Origin() tcpip.SockErrOrigin      { return tcpip.SockExtErrorOriginLocal }
func (unreachable) Type() uint8                      { return 0 }
func (unreachable) Code() uint8                      { return 0 }
func (unreachable) Info() uint32                     { return 0 }
func (u unreachable) Kind() stack.TransportErrorKind { return stack.TransportErrorKind(u) }

// lowerMTU tells te that its IP packets may be mtu bytes at most, ipHdr of
// them the IP header.
func lowerMTU(te *tcp.Endpoint, mtu, ipHdr uint32) {
	if mtu > ipHdr {
		te.HandleError(pathMTU(mtu-ipHdr), nil)
	}
}

// pathMTU is the transport error gVisor's IP layer hands a transport
// endpoint for a Packet Too Big message: Info is the MTU left for the
// transport's header and payload.
type pathMTU uint32

func (pathMTU) Origin() tcpip.SockErrOrigin    { return tcpip.SockExtErrorOriginLocal }
func (pathMTU) Type() uint8                    { return 0 }
func (pathMTU) Code() uint8                    { return 0 }
func (m pathMTU) Info() uint32                 { return uint32(m) }
func (pathMTU) Kind() stack.TransportErrorKind { return stack.PacketTooBigTransportError }

// AddAddress assigns an interface address (its prefix length is kept but
// routing does not depend on it: every destination goes out of the NIC).
func (s *Stack) AddAddress(p netip.Prefix) error {
	a := p.Addr().Unmap()
	pa := tcpip.ProtocolAddress{
		Protocol:          protoOf(a),
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(a), PrefixLen: p.Bits()},
	}
	if err := s.gs.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("add address %s: %w", p, toErrno(err))
	}
	return nil
}

// RemoveAddress removes an address AddAddress added. Connections using it
// stay until they end; they can no longer send once it is gone.
func (s *Stack) RemoveAddress(a netip.Addr) error {
	if err := s.gs.RemoveAddress(nicID, tcpAddr(a.Unmap())); err != nil {
		return fmt.Errorf("remove address %s: %w", a, toErrno(err))
	}
	return nil
}

// Stats are a Stack's counters.
type Stats struct {
	Conns         int    // live Conns
	Listeners     int    // live Listeners
	Endpoints     int    // gVisor's registered transport endpoints (TIME-WAIT ones included)
	Established   uint64 // gVisor: connections now established
	RxPackets     uint64 // injected and handed to gVisor
	RxDropped     uint64 // injected and dropped (not TCP over IP, stack closed)
	TxPackets     uint64 // handed to the Writer
	TxDropped     uint64 // refused by the Writer
	TxNonTCP      uint64 // non-TCP packets gVisor sent, discarded
	Refused       uint64 // connections refused by MaxConns/MaxConnsPerOwner or the buffers' bounds
	Retransmits   uint64 // gVisor: segments retransmitted
	ResetsSent    uint64 // gVisor: RSTs sent
	ResetsRecv    uint64 // gVisor: RSTs received
	ChecksumError uint64 // injected packets with a bad IPv4 header or TCP checksum
	// RxBig counts the BIG TCP segments (longer than an IP length field
	// holds) injected, each cut into segments gVisor takes (deliverBig).
	RxBig uint64
	// AcksClamped counts bare acknowledgements whose sequence number the
	// link lowered to the right edge of the peer's window (the peer had
	// shrunk it); WindowsUntracked, connections whose peer's window the
	// link could not follow (their SYN's window scale was overwritten).
	AcksClamped, WindowsUntracked uint64
	// AcksCoalesced counts bare acknowledgements the link held back and
	// dropped because a later segment carried them; AcksDelayed, those it
	// sent at Options.AckDelay (ack.go).
	AcksCoalesced, AcksDelayed uint64
	// Buffers is what the Conns' gVisor buffers take, against the bounds.
	Buffers BufferUse
	// Orphans are the finished Conns gVisor still delivers for, their
	// send buffers accounted in Buffers; OrphansReset counts those reset
	// because their peer took nothing for Options.CloseTimeout
	// (orphans.go).
	Orphans      int
	OrphansReset uint64
	// AbortedOnClose counts the Conns reset when their app closed them
	// with data unread or the peer sent data after (Conn.Close), as
	// Linux's TCPAbortOnClose and TCPAbortOnData.
	AbortedOnClose uint64
}

// Stats returns the Stack's counters.
func (s *Stack) Stats() Stats {
	s.mu.Lock()
	st := Stats{Conns: len(s.conns), Listeners: len(s.listeners), Buffers: BufferUse{Bytes: s.bufBytes,
		Limit: s.opts.BufferBytes, GroupLimit: s.opts.GroupBufferBytes, Clamped: s.bufClamped, Held: s.bufHeld},
		Orphans: len(s.orphans), OrphansReset: s.orphansReset.Load(), AbortedOnClose: s.abortedOnClose.Load()}
	s.mu.Unlock()
	gst := s.gs.Stats()
	st.Endpoints = len(s.gs.RegisteredEndpoints())
	st.Established = gst.TCP.CurrentEstablished.Value()
	st.Retransmits = gst.TCP.Retransmits.Value()
	st.ResetsSent = gst.TCP.ResetsSent.Value()
	st.ResetsRecv = gst.TCP.ResetsReceived.Value()
	st.ChecksumError = gst.TCP.ChecksumErrors.Value() + s.link.rxBadCsum.Load()
	st.RxPackets = s.link.rxPackets.Load()
	st.RxDropped = s.link.rxDropped.Load()
	st.RxBig = s.link.rxBig.Load()
	st.TxPackets = s.link.txPackets.Load()
	st.TxDropped = s.link.txDropped.Load()
	st.TxNonTCP = s.link.txNonTCP.Load()
	st.AcksClamped = s.link.win.clamped.Load()
	st.WindowsUntracked = s.link.win.untraced.Load()
	st.AcksCoalesced = s.link.win.coalesced.Load()
	st.AcksDelayed = s.link.win.delayed.Load()
	st.Refused = s.refused.Load()
	return st
}

// Close aborts every Conn (each gets Reset with ECONNABORTED, then Closed)
// and Listener, stops the pumps, and destroys the gVisor stack. Handlers
// have been called for the last time when Close returns.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := make([]*Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	cs := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.abort(true)
	}
	s.connWG.Wait()
	s.stopSweep()
	close(s.closedCh)
	for _, p := range s.pumps {
		p.stop()
	}
	s.pumpWG.Wait()
	s.gs.Destroy()
	s.mu.Lock()
	orphans := make([]*Conn, 0, len(s.orphans))
	for c := range s.orphans {
		delete(s.orphans, c)
		s.releaseBuffersLocked(c)
		orphans = append(orphans, c)
	}
	s.mu.Unlock()
	for _, c := range orphans {
		c.untrackWindow()
	}
	return nil
}

// admit counts a new Conn of owner, or refuses it over the limits.
func (s *Stack) admit(c *Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case len(s.conns) >= s.opts.MaxConns, s.owners[c.owner] >= s.opts.MaxConnsPerOwner:
		s.refused.Add(1)
		return ErrTooManyConns
	}
	s.conns[c] = struct{}{}
	s.owners[c.owner]++
	s.connWG.Add(1)
	return nil
}

// release forgets a finished Conn.
func (s *Stack) release(c *Conn) {
	s.forget(c, false)
	s.connWG.Done()
}

// forget counts c out of the Stack's connections and its owner's (Stats,
// MaxConnsPerOwner). A Conn that ends does it before its handler's Closed,
// so that whoever Closed tells sees the count without it; the Stack's
// Close still waits for Closed to return (connWG.Done after it).
//
// An orphan (gVisor still delivers what the closed Conn sent) keeps what
// it holds accounted until it is delivered or reset (orphans.go);
// forget reports whether it kept c so (not while the Stack closes).
func (s *Stack) forget(c *Conn, orphan bool) (kept bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.owners[c.owner]--; s.owners[c.owner] <= 0 {
		delete(s.owners, c.owner)
	}
	if orphan && !s.closed {
		s.orphanLocked(c)
		return true
	}
	s.releaseBuffersLocked(c)
	return false
}

// pumpFor returns the pump that serves object id.
func (s *Stack) pumpFor(id uint64) *pump { return s.pumps[id%uint64(len(s.pumps))] }

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func tcpAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

func fromTCPAddr(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}
