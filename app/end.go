package app

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// end is this app's end of a session or listener: the fifo it reads (rx)
// and the one it writes (tx), and the eventfd of the other side, which is
// both the consumer of tx and the producer of rx: a datapath worker's kick
// eventfd, or the peer app's eventfd for a cut-through session.
//
// Consumer calls (rx) and producer calls (tx) are each serialized by the
// object that owns the end.
type end struct {
	h      flow.Handle
	rx, tx *fifo.Fifo
	seg    *fifo.Segment // a cut-through session's own segment (unmapped by close), nil otherwise
	// closed is set by close, which the owner calls with its writers'
	// lock held, and by a Conn's Close (with that lock held) before it
	// lets the session go: a writer that slept without that lock finds it
	// set and does not touch the fifos again.
	closed    bool
	signalFD  int  // the other side's eventfd, -1 for none
	ownSignal bool // signalFD belongs to the end (a peer app's eventfd)
	datapath  bool // the other side is a datapath worker
	// sleeping is the worker's sleep flag (App.sleepFlag): signalFD is
	// written only while it is set; nil: always.
	sleeping    *atomic.Uint32
	dgram       bool // datagram framing (UDP)
	remote      netip.AddrPort
	gone        atomic.Bool // the peer closed the session
	broken      atomic.Bool // a cut-through fifo found corrupt: not read again; a listener's end is dropped once gone (PacketConn.dropBroken), a Conn's reset (Conn.resetCorrupt)
	fin         atomic.Bool // a stream's peer closed its half: reads end once rx is empty
	reset       atomic.Bool // the session was reset
	timedOut    atomic.Bool // the reset was a timeout (retransmissions or keepalive probes unanswered)
	fifoCorrupt atomic.Bool // reset because a fifo's indices were corrupt: by the daemon (wire), or by this end (cut-through: Conn.resetCorrupt)
	brokenPipe  atomic.Bool // the peer reset it after its FIN: writes fail with EPIPE, reads end with io.EOF
	// resetAhead: the connection was reset (fifo.EventResetAhead) while
	// the daemon still holds data received before, which reads take
	// first: writes fail now, with the reset's error once.
	resetAhead atomic.Bool

	// dialed is, for a cut-through session accepted on a PacketConn, the
	// address its peer dialed (the listener's it reached): its family
	// bounds the datagrams WriteTo sends it (checkDgramSize), as a kernel
	// UDP socket's to a loopback address of that family are bounded.
	dialed netip.AddrPort
}

// newCTEnd maps a cut-through session passed by the daemon: its segment
// and the peer app's eventfd, which it takes over (closing them on error).
func newCTEnd(info *api.SessionInfo, segFD, peerFD int) (*end, error) {
	seg, err := fifo.MapSegment(segFD)
	if err != nil {
		unix.Close(segFD)
		unix.Close(peerFD)
		return nil, fmt.Errorf("%w: cut-through segment: %w", ErrProtocol, err)
	}
	fail := func(err error) (*end, error) {
		seg.Close()
		unix.Close(peerFD)
		return nil, err
	}
	if link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(peerFD)); err != nil || link != "anon_inode:[eventfd]" {
		return fail(fmt.Errorf("%w: the peer's descriptor is not an eventfd", ErrProtocol))
	}
	if info.Rx.Offset > 1<<32-1 || info.Tx.Offset > 1<<32-1 || info.Rx.Offset == info.Tx.Offset {
		return fail(fmt.Errorf("%w: bad fifo offsets", ErrProtocol))
	}
	rx, err := seg.FifoAt(uint32(info.Rx.Offset))
	if err != nil {
		return fail(fmt.Errorf("%w: rx fifo: %w", ErrProtocol, err))
	}
	tx, err := seg.FifoAt(uint32(info.Tx.Offset))
	if err != nil {
		return fail(fmt.Errorf("%w: tx fifo: %w", ErrProtocol, err))
	}
	// The sizes are the daemon's, which the peer cannot change: a header
	// it rewrote before this end mapped the segment (a tx fifo of 64 bytes,
	// on which every datagram would fail as too long) is refused.
	if rx.Size() != info.Rx.Size || tx.Size() != info.Tx.Size {
		return fail(fmt.Errorf("%w: fifo sizes %d and %d in the segment, the daemon made them %d and %d", ErrProtocol, rx.Size(), tx.Size(), info.Rx.Size, info.Tx.Size))
	}
	// Each fifo's header says its size, which the peer could have written
	// before this end mapped the segment: two that overlap would have this
	// end read what it writes.
	rxEnd := uint64(info.Rx.Offset) + fifo.FifoHeaderSize + uint64(rx.Size())
	txEnd := uint64(info.Tx.Offset) + fifo.FifoHeaderSize + uint64(tx.Size())
	if uint64(info.Rx.Offset) < txEnd && uint64(info.Tx.Offset) < rxEnd {
		return fail(fmt.Errorf("%w: the rx and tx fifos overlap", ErrProtocol))
	}
	// Mapped, the segment needs no descriptor: a peer that opens many
	// sessions to this app costs it one descriptor each (peerFD), not two.
	seg.DropFD()
	udp := info.Local.Transport == flow.TransportUDP || info.Remote.Transport == flow.TransportUDP
	return &end{h: info.Handle, rx: rx, tx: tx, seg: seg, signalFD: peerFD, ownSignal: true, dgram: udp}, nil
}

// close releases what the end owns. No call may use it any more.
func (e *end) close() {
	e.closed = true
	if e.seg != nil {
		e.seg.Close()
		e.seg = nil
	}
	if e.ownSignal && e.signalFD >= 0 {
		unix.Close(e.signalFD)
		e.signalFD = -1
	}
}

// afterEnqueue signals the consumer of tx if it needs it.
func (e *end) afterEnqueue() {
	if e.tx.SetEvent() {
		e.signal()
	}
}

// afterDequeue tells the producer of rx that room was made, if it asked.
// A one-shot notification leaves a flag that an awake worker looks at
// (DeqNotified); DeqNotifyAlways leaves none, so it always signals.
func (e *end) afterDequeue(n int) {
	if !e.rx.DeqNotify(n) {
		return
	}
	if e.rx.DeqNotified() {
		e.signal()
		return
	}
	signal(e.signalFD)
}

// signal writes the other side's eventfd, unless it is a worker that is
// awake: that one finds the flag just set by itself. The flag was set
// (SetEvent, DeqNotify) before the worker's sleep flag is read here.
func (e *end) signal() {
	if e.sleeping != nil && e.sleeping.Load() == 0 {
		return
	}
	signal(e.signalFD)
}

// readDgram copies the next datagram's payload into p (dropping what does
// not fit, as a UDP socket does) and fills h. ok is false when none is
// queued.
func (e *end) readDgram(p []byte, h *fifo.DgramHeader) (n int, ok bool, err error) {
	a, b, err := e.rx.PeekDgram(h)
	if err == fifo.ErrEmpty {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n = copy(p, a)
	if n < len(p) {
		n += copy(p[n:], b)
	}
	m, err := e.rx.DropDgram()
	if err != nil {
		return 0, false, err
	}
	e.afterDequeue(fifo.DgramRecordSize(m))
	return n, true, nil
}

// readable reports whether rx has something queued, which is never so
// once rx was found corrupt (broken). Consumer side.
//
// A fifo whose indices the other side broke counts: the read it leads to
// fails with fifo.ErrCorrupt, which ends the session (PacketConn.dropBroken,
// Conn.resetCorrupt), where passing it over as empty would leave the
// session, and a reader waiting on it, as they were for good.
func (e *end) readable() bool { return !e.broken.Load() && e.rx.Pending() }

// fromHeader is the remote address of a datagram header.
func fromHeader(h *fifo.DgramHeader) netip.AddrPort {
	if h.Family != flow.Family4 && h.Family != flow.Family6 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(flow.AddrFrom(h.Remote, h.Family), h.RemotePort)
}

// toHeader fills h to send to remote from local.
func toHeader(h *fifo.DgramHeader, local, remote netip.AddrPort) {
	*h = fifo.DgramHeader{}
	a := remote.Addr().Unmap()
	if a.IsValid() {
		h.Family = flow.Family4
		if a.Is6() {
			h.Family = flow.Family6
		}
		h.Remote = flow.AddrBytes(a)
	}
	h.RemotePort = remote.Port()
	if la := local.Addr(); la.IsValid() && !la.IsUnspecified() {
		h.Local = flow.AddrBytes(la.Unmap())
	}
	h.LocalPort = local.Port()
}

// resetErr is the error of a reset session: ETIMEDOUT when the daemon
// said it timed out, ECONNRESET wrapped with flow.ErrFifoCorrupt when it
// reset the connection because a fifo of the session was corrupt, EPIPE
// when the peer reset it after its FIN (the daemon's word, or a FIN this
// end had before the reset: a read then ends with io.EOF instead, as
// Linux's after tcp_reset in CLOSE_WAIT), else ECONNRESET.
func (e *end) resetErr() error {
	if e.timedOut.Load() {
		return syscall.ETIMEDOUT
	}
	if e.brokenPipe.Load() {
		return syscall.EPIPE
	}
	if e.fifoCorrupt.Load() {
		return errResetFifoCorrupt
	}
	if e.fin.Load() {
		return syscall.EPIPE
	}
	return syscall.ECONNRESET
}

// readEndErr is the error of a stream read with nothing left to read
// after the peer's FIN or the session's end; nil: io.EOF. A session that
// had its peer's FIN before it was reset or timed out ends its reads with
// io.EOF, as a kernel socket's recv does once it had the FIN (SOCK_DONE),
// whatever came after; one the daemon reset for a corrupt fifo still
// says so.
func (e *end) readEndErr() error {
	if !e.reset.Load() || e.brokenPipe.Load() {
		return nil
	}
	if e.fin.Load() && !e.fifoCorrupt.Load() {
		return nil
	}
	return e.resetErr()
}

// errResetFifoCorrupt: syscall.ECONNRESET, because of flow.ErrFifoCorrupt.
var errResetFifoCorrupt = fmt.Errorf("%w: %w", syscall.ECONNRESET, flow.ErrFifoCorrupt)

// txLinger bounds how long closing a datagram session of the wire waits
// for the daemon to take what its tx fifo holds (waitTxTaken).
const txLinger = 250 * time.Millisecond

// waitTxTaken waits until the daemon's worker took every datagram e's tx
// fifo holds, at most txLinger, when e is a datagram session of the wire:
// the datagrams written before a Close go out, as a kernel socket's
// sendto has sent them by the time it returns, and a program that sends
// one datagram and exits is heard. The unbind that follows would close
// the kernel socket the daemon sends some of them through (larger than a
// frame, to a group, to the host itself). Nothing waits for a stream (the
// daemon closes it after its tx fifo drained) or a cut-through session
// (the peer reads the fifo itself), nor once the daemon or the session is
// gone.
func (a *App) waitTxTaken(e *end) {
	if e == nil || !e.datapath || !e.dgram || e.tx == nil || e.gone.Load() {
		return
	}
	for deadline := time.Now().Add(txLinger); e.tx.Queued() && time.Now().Before(deadline) && a.stopped() == nil; {
		time.Sleep(100 * time.Microsecond)
	}
}
