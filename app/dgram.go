package app

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// The largest UDP payloads IPv4 and IPv6 can carry (a 65,535-byte IPv4
// packet less its 20-byte header and the UDP header; a 65,535-byte IPv6
// payload less the UDP header), as the kernel's UDP sockets allow them.
const (
	MaxDatagram4 = 65507
	MaxDatagram6 = 65527
)

// Errors of datagram writes: each wraps the errno a kernel UDP socket
// returns for the same call, so errors.Is(err, syscall.EMSGSIZE) and the
// like work as with package net.
var (
	errMessageTooLong = &Error{Msg: ErrMessageTooLong.Error(), Err: errors.Join(ErrMessageTooLong, syscall.EMSGSIZE)}
	errPortZero       = &Error{Msg: "app: destination port 0", Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
	errNoAddress      = &Error{Msg: "app: no destination address", Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
	// errRefusedFifoCorrupt is what a cut-through UDP session whose peer
	// broke a fifo reports once (Conn.resetCorrupt): ECONNREFUSED, the
	// error of a UDP peer that is no longer there, because of
	// flow.ErrFifoCorrupt.
	errRefusedFifoCorrupt = fmt.Errorf("%w: %w", syscall.ECONNREFUSED, flow.ErrFifoCorrupt)
)

// checkDgramSize refuses a datagram of n bytes to remote larger than its
// family allows.
func checkDgramSize(n int, remote netip.AddrPort) error {
	max, v := MaxDatagram4, 4
	if a := remote.Addr(); a.Is6() && !a.Is4In6() {
		max, v = MaxDatagram6, 6
	}
	if n > max {
		// What is wrong, not the fifo's room: ErrMessageTooLong and
		// EMSGSIZE under it all the same.
		return &Error{Msg: fmt.Sprintf("app: datagram of %d bytes: more than IPv%d carries (%d)", n, v, max), Err: errMessageTooLong.Err}
	}
	return nil
}

// maxUDPLen4 is the largest length udp_sendmsg takes before it looks at
// the destination: a longer IPv4 datagram fails with EMSGSIZE whatever its
// port.
const maxUDPLen4 = 0xFFFF

// checkDest checks a WriteTo's destination as a kernel UDP socket bound to
// ep would, in its order: an address (EINVAL), of ep's family (an IPv4
// destination of an IPv6 listener, which takes IPv6 alone, ENETUNREACH,
// before its port is looked at, as udpv6_sendmsg refuses it; an IPv6 one
// of an IPv4 listener EAFNOSUPPORT), an IPv4 datagram no longer than
// 65,535 bytes (EMSGSIZE, udp_sendmsg's first check), a port (EINVAL),
// and the datagram's size (EMSGSIZE).
func checkDest(ep flow.Endpoint, remote netip.AddrPort, n int) error {
	a := remote.Addr().Unmap()
	if !a.IsValid() {
		return errNoAddress
	}
	fam := flow.Family4
	if a.Is6() {
		fam = flow.Family6
	}
	if want := ep.Family(); fam != want {
		errno := syscall.EAFNOSUPPORT
		if want == flow.Family6 {
			// An IPv6 listener is a socket with IPV6_V6ONLY set, whose
			// sendto to an IPv4 (IPv4-mapped) address fails so.
			errno = syscall.ENETUNREACH
		}
		return &Error{Msg: fmt.Sprintf("app: destination %v is not of the listener's family (%v)", remote, ep.Addr),
			Err: errno}
	}
	if remote.Port() == 0 && (fam == flow.Family6 || n <= maxUDPLen4) {
		return errPortZero
	}
	return checkDgramSize(n, netip.AddrPortFrom(a, remote.Port()))
}

// SetDontFragment sets (or clears) "don't fragment" for the datagrams the
// listener sends to the wire from now on, as IP_MTU_DISCOVER =
// IP_PMTUDISC_DO (IPV6_DONTFRAG for IPv6) does on a kernel UDP socket:
// each goes out as one IP packet, with the DF bit set (IPv4), or not at
// all when that packet would exceed the path MTU (the route's MTU the
// daemon reads from the kernel, else the interface's). Cleared, the
// default, a datagram larger than the path MTU leaves fragmented.
//
// A datagram refused for its size fails its WriteTo with an error
// wrapping syscall.EMSGSIZE, nothing sent. The path MTU is the daemon's
// to know: WriteTo asks it for a destination the first time it sends it a
// datagram larger than the minimum MTU (576 bytes of IPv4 packet, 1,280
// of IPv6; smaller ones are never checked), and keeps the answer for 10
// seconds, per listener, for up to 1,024 destinations. When the path MTU
// shrinks after that, the daemon drops the datagram, counts it
// (tx_dont_fragment in ctl show stats) and reports it, and the listener
// asks the path MTU anew: its next WriteTo of a datagram too large for
// the new path MTU fails with EMSGSIZE. No ReadFrom or ReadBatch fails for
// it, as an unconnected kernel socket reports no asynchronous error.
// Datagrams to cut-through sessions are never
// fragmented: the setting does not change them.
func (p *PacketConn) SetDontFragment(on bool) error {
	if err := p.setClosed(); err != nil {
		return err
	}
	p.df.Store(on)
	return nil
}

// SetReadBuffer is *net.UDPConn's, for programs that size a
// net.PacketConn's buffers when it has the method (quic-go does): the
// listener's receive buffer is its rx fifo, sized when the app attaches
// (Options.RxFifoSize). A size up to the fifo's is there already: nil. A
// larger one fails with an error wrapping syscall.ENOBUFS that says so,
// rather than pass unnoticed as the kernel's clamp at net.core.rmem_max
// does.
func (p *PacketConn) SetReadBuffer(bytes int) error {
	return p.checkBuffer(bytes, "rx", "RxFifoSize", func(e *end) *fifo.Fifo { return e.rx })
}

// SetWriteBuffer is SetReadBuffer's counterpart for the tx fifo
// (Options.TxFifoSize), where datagrams wait for the daemon.
func (p *PacketConn) SetWriteBuffer(bytes int) error {
	return p.checkBuffer(bytes, "tx", "TxFifoSize", func(e *end) *fifo.Fifo { return e.tx })
}

// checkBuffer compares bytes with the smallest of the wire fifos fifoOf
// picks (a listener without a datapath has none: nil).
func (p *PacketConn) checkBuffer(bytes int, which, option string, fifoOf func(*end) *fifo.Fifo) error {
	if err := p.setClosed(); err != nil {
		return err
	}
	have := -1
	for _, b := range p.binds {
		if b.wire != nil {
			if f := fifoOf(b.wire); f != nil && (have < 0 || int(f.Size()) < have) {
				have = int(f.Size())
			}
		}
	}
	if err := bufferError(bytes, have, "the listener's "+which+" fifo", "when the app attaches (app.Options."+option+")"); err != nil {
		return addrError("set", p.laddr, err)
	}
	return nil
}

// bufferError is what SetReadBuffer and SetWriteBuffer say of bytes for a
// buffer of have bytes (have < 0: none, whatever is asked passes): EINVAL
// for a negative size, nil up to have, else ENOBUFS saying which fifo
// (what) the buffer is and what sized it (sized).
func bufferError(bytes, have int, what, sized string) error {
	switch {
	case bytes < 0:
		return syscall.EINVAL
	case have < 0 || bytes <= have:
		return nil
	}
	return fmt.Errorf("%d bytes asked: the buffer is %s, %d bytes, sized %s: %w", bytes, what, have, sized, syscall.ENOBUFS)
}

// peerError takes an asynchronous error the daemon reports for one of the
// listener's handles: EMSGSIZE, a don't-fragment datagram it dropped
// because the path MTU shrank since it was asked. That fails no later
// call, as an unconnected kernel socket reports no asynchronous error
// (without IP_RECVERR) and only its next sendto of a datagram too large
// for the new path MTU fails: the cache is cleared, so the next WriteTo
// asks the path MTU again and refuses such a datagram. A server's ReadFrom
// loop is not ended by it. The daemon reports nothing else of a listener.
func (p *PacketConn) peerError(h flow.Handle, errno syscall.Errno) {
	if p.boundAs(h) && errno == syscall.EMSGSIZE {
		p.pmtu.clear()
	}
}

// SetDontFragment sets (or clears) "don't fragment" for the datagrams a
// UDP session sends to the wire from now on, as PacketConn.SetDontFragment
// does: a Write whose IP packet would exceed the path MTU fails with an
// error wrapping syscall.EMSGSIZE, nothing sent (the session asks the
// daemon the path MTU once and keeps it 10 seconds); when the path MTU
// shrank since, the daemon drops the datagram and the session's next Read
// or Write returns EMSGSIZE once, as a connected kernel socket reports its
// asynchronous errors. A cut-through session never fragments;
// it accepts the setting and ignores it. A TCP session returns an error
// wrapping flow.ErrNotSupported.
func (c *Conn) SetDontFragment(on bool) error {
	if err := c.setClosed("set"); err != nil {
		return err
	}
	if !c.e.dgram {
		return netError("set", c.laddr, c.raddr, fmt.Errorf("don't fragment on a stream: %w", flow.ErrNotSupported))
	}
	c.df.Store(on)
	return nil
}

// SetReadBuffer is *net.TCPConn's and *net.UDPConn's, for programs that
// size a connection's buffers when it has the method: the session's
// receive buffer is its rx fifo, sized when the session opens (the app's
// Options.RxFifoSize). A size up to the fifo's is there already: nil. A
// larger one fails with an error wrapping syscall.ENOBUFS that says so,
// as PacketConn.SetReadBuffer does, where a kernel socket would clamp it
// at net.core.rmem_max without a word. A TCP session over the wire has
// gVisor's receive buffer too, behind the fifo; the fifo is the buffer
// the app sees and the one compared.
func (c *Conn) SetReadBuffer(bytes int) error {
	return c.checkBuffer(bytes, c.e.rx, "rx", "the app's app.Options.RxFifoSize")
}

// SetWriteBuffer is SetReadBuffer's counterpart for the tx fifo, where
// what the app writes waits for the daemon (the app's Options.TxFifoSize)
// or, in a session with another app of the host, for that app's reads
// (the fifo is that app's rx fifo, sized by its Options.RxFifoSize).
func (c *Conn) SetWriteBuffer(bytes int) error {
	option := "the app's app.Options.TxFifoSize"
	if !c.e.datapath {
		option = "the peer app's app.Options.RxFifoSize: a session between two apps of the host writes into the peer's rx fifo"
	}
	return c.checkBuffer(bytes, c.e.tx, "tx", option)
}

func (c *Conn) checkBuffer(bytes int, f *fifo.Fifo, which, option string) error {
	if err := c.setClosed("set"); err != nil {
		return err
	}
	have := -1
	if f != nil {
		have = int(f.Size())
	}
	if err := bufferError(bytes, have, "the session's "+which+" fifo", "when the session opens ("+option+")"); err != nil {
		return netError("set", c.laddr, c.raddr, err)
	}
	return nil
}
