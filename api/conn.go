package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Cred is the identity of the process at the other end of a Conn, as the
// kernel recorded it (SO_PEERCRED) when the connection was made.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// Conn is one end of a control connection: a connected SOCK_SEQPACKET unix
// socket on which every record is one message (or one piece of a continued
// message).
//
// Concurrency: one goroutine at a time may receive (Recv, RecvID); any
// number may send (Send, SendID, SendContext) concurrently with it and with
// each other. Close may be called from any goroutine and unblocks the
// others. Deadlines apply as on a net.Conn.
//
// A send blocks while the socket's buffer is full, that is while the peer
// does not read; SendContext bounds that wait, and the wait for other
// senders, by its context. On a connection served by a Server, sends do not
// touch the socket at all: they are queued for the connection's writer
// (see Server), so they never block on the peer.
//
// Descriptors: Send does not take ownership of the descriptors it is given;
// the kernel duplicates them into the peer. Descriptors returned by Recv
// belong to the caller, who must close them.
type Conn struct {
	uc   *net.UnixConn
	rc   syscall.RawConn
	peer Cred

	// Receive state, used only by the one receiving goroutine.
	rbuf   []byte // a buffer of recvBufs, held only while a record is received and decoded
	roob   []byte
	rn     int
	roobn  int
	rflags int
	rerr   error
	dec    decoder
	readFn func(fd uintptr) bool
	// accept, when set, vets the header of every record before its body
	// is decoded or any continuation is reassembled (a Server sets it).
	accept func(Header) error
	// maxReassembled bounds a message sent as several records; 0 means
	// MaxReassembled.
	maxReassembled int
	// keepTruncated: a record whose descriptors did not all arrive comes
	// without any instead of failing (ClientOptions.KeepTruncated). Set
	// before the receiving goroutine starts.
	keepTruncated bool

	// q, when set, queues every send for a writer goroutine instead of
	// writing on the caller's goroutine (a Server sets it).
	q atomic.Pointer[outQueue]

	// wsem serializes writers: a send holds its one token for the whole
	// of a message, all the records of a continued message included, so
	// the records of two messages never interleave. A channel rather
	// than a mutex, so that SendContext can give up waiting for it.
	wsem    chan struct{}
	wbuf    []byte  // guarded by wsem: the record being sent
	woob    []byte  // guarded by wsem: its control data
	enc     encoder // guarded by wsem
	wcur    []byte  // guarded by wsem: argument of writeFn
	woobcur []byte  // guarded by wsem: argument of writeFn
	wn      int     // guarded by wsem: result of writeFn
	werr    error   // guarded by wsem: result of writeFn
	writeFn func(fd uintptr) bool
}

// oobSize fits MaxFDs descriptors; a record carrying more is cut by the
// kernel (MSG_CTRUNC) and refused.
var oobSize = unix.CmsgSpace(MaxFDs * 4)

func newConn(uc *net.UnixConn) (*Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	c := &Conn{
		uc:   uc,
		rc:   rc,
		roob: make([]byte, oobSize),
		woob: make([]byte, 0, oobSize),
		wsem: make(chan struct{}, 1),
	}
	c.readFn = c.doRead
	c.writeFn = c.doWrite
	var uerr error
	err = rc.Control(func(fd uintptr) {
		var u *unix.Ucred
		u, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if uerr == nil {
			c.peer = Cred{PID: u.Pid, UID: u.Uid, GID: u.Gid}
		}
	})
	if err == nil && uerr != nil {
		err = fmt.Errorf("getsockopt SO_PEERCRED: %w", uerr)
	}
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	return c, nil
}

// Pair returns two connected Conns over a socketpair, for tests and for
// in-process use.
func Pair() (*Conn, *Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("api: socketpair: %w", err)
	}
	a, err := fileConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn makes a Conn of a socket descriptor, which it consumes.
func fileConn(fd int) (*Conn, error) {
	f := os.NewFile(uintptr(fd), "seqpacket")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("api: descriptor is a %T, not a unix socket", nc)
	}
	return newConn(uc)
}

// Peer returns the credentials of the peer process.
func (c *Conn) Peer() Cred { return c.peer }

// Close closes the connection. Blocked Recv and Send calls return
// ErrClosed. It never waits for the peer: closing the socket ends a send
// blocked on a full buffer, and messages still queued for the peer are
// dropped.
func (c *Conn) Close() error {
	if q := c.q.Load(); q != nil {
		q.stop(ErrClosed)
	}
	if err := c.uc.Close(); err != nil {
		return c.ioError("close", err)
	}
	return nil
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.uc.SetDeadline(t) }

// SetMaxReassembled bounds the size of a message received as several
// records (FlagMore) to n bytes; n <= 0 means MaxReassembled. A message
// past it fails Recv with ErrTooLarge as soon as the record that crosses
// the bound arrives. Call it before receiving, from the receiving goroutine.
func (c *Conn) SetMaxReassembled(n int) { c.maxReassembled = n }

// SetReadDeadline sets the deadline of Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of Send. SendContext overrides it for
// its own duration.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.uc.SetWriteDeadline(t) }

// ioError translates an error of the socket layer.
func (c *Conn) ioError(op string, err error) error {
	switch {
	case errors.Is(err, net.ErrClosed):
		return fmt.Errorf("api: %s: %w", op, ErrClosed)
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EPIPE):
		return fmt.Errorf("api: %s: %w: %w", op, io.EOF, err)
	}
	return fmt.Errorf("api: %s: %w", op, err)
}

// Recv receives the next message and the descriptors it carries (which the
// caller then owns). See RecvID.
func (c *Conn) Recv() (Message, []int, error) {
	_, m, fds, err := c.RecvID()
	return m, fds, err
}

// RecvID receives the next message, its request id (0 for a notice), and
// the descriptors it carries, which the caller then owns and must close.
// A message sent as several records (FlagMore) is reassembled.
//
// Errors: io.EOF when the peer closed the connection; an error wrapping
// ErrMalformed when the record was bad (its descriptors are closed; id is
// its request id when the header could be read); ErrClosed after Close.
// After an ErrMalformed the stream is no longer trusted: close the Conn.
func (c *Conn) RecvID() (id uint32, m Message, fds []int, err error) {
	h, m, fds, err := c.recvRecord()
	if err != nil || h.Flags&FlagMore == 0 {
		return h.ID, m, fds, err
	}
	first := m.(*ShowReply) // Decode allows FlagMore on ShowReply only
	buf := first.JSON
	for {
		h2, m2, fds2, err := c.recvRecord()
		if err != nil {
			return h.ID, nil, nil, err
		}
		if h2.Type != h.Type || h2.ID != h.ID {
			closeFDs(fds2)
			return h.ID, nil, nil, malformed(ErrMalformed, "%v id %d inside continued %v id %d", h2.Type, h2.ID, h.Type, h.ID)
		}
		chunk := m2.(*ShowReply).JSON
		limit := c.maxReassembled
		if limit <= 0 {
			limit = MaxReassembled
		}
		if len(buf)+len(chunk) > limit {
			return h.ID, nil, nil, malformed(ErrTooLarge, "continued %v exceeds %d bytes", h.Type, limit)
		}
		buf = append(buf, chunk...)
		if h2.Flags&FlagMore == 0 {
			break
		}
	}
	first.JSON = buf
	return h.ID, first, nil, nil
}

// recvRecord receives and decodes one record.
func (c *Conn) recvRecord() (Header, Message, []int, error) {
	defer c.putRecvBuf()
	if err := c.rc.Read(c.readFn); err != nil {
		return Header{}, nil, nil, c.ioError("recv", err)
	}
	if c.rerr != nil {
		return Header{}, nil, nil, c.ioError("recvmsg", c.rerr)
	}
	var fds []int
	if c.roobn > 0 {
		var ok bool
		fds, ok = parseRights(c.roob[:c.roobn])
		if !ok {
			closeFDs(fds)
			return Header{}, nil, nil, malformed(ErrMalformed, "bad control message")
		}
	}
	trunc := c.rflags&unix.MSG_CTRUNC != 0
	if trunc {
		closeFDs(fds)
		fds = nil
		if !c.keepTruncated {
			h, _ := DecodeHeader(c.rbuf[:c.rn])
			return h, nil, nil, malformed(ErrTruncated, "more than %d descriptors", MaxFDs)
		}
	}
	if c.rflags&unix.MSG_TRUNC != 0 {
		closeFDs(fds)
		h, _ := DecodeHeader(c.rbuf[:c.rn])
		return h, nil, nil, errRecordSize
	}
	if c.rn == 0 {
		closeFDs(fds)
		return Header{}, nil, nil, fmt.Errorf("api: recv: %w", io.EOF)
	}
	if c.accept != nil {
		h, err := DecodeHeader(c.rbuf[:c.rn])
		if err == nil {
			err = c.accept(h)
		}
		if err != nil {
			closeFDs(fds)
			return h, nil, nil, err
		}
	}
	h, m, err := c.dec.record(c.rbuf[:c.rn])
	if err != nil {
		closeFDs(fds)
		return h, nil, nil, err
	}
	if want := m.FDs(); len(fds) != want && !trunc {
		closeFDs(fds)
		return h, nil, nil, malformed(ErrUnexpectedFDs, "%v carries %d descriptors, record had %d", h.Type, want, len(fds))
	}
	return h, m, fds, nil
}

// recvBufs keeps a few record buffers for the connections' receives. A
// connection holds one only while a record is there to read, so that idle
// connections cost no buffer; the list is bounded and, unlike a sync.Pool,
// not emptied by the collector, so steady receiving allocates nothing.
var recvBufs = make(chan []byte, 16)

// doRead receives one record, taking a buffer for it first.
func (c *Conn) doRead(fd uintptr) bool {
	if c.rbuf == nil {
		select {
		case c.rbuf = <-recvBufs:
		default:
			c.rbuf = make([]byte, MaxRecordSize)
		}
	}
	for {
		n, oobn, flags, err := recvmsg(int(fd), c.rbuf, c.roob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.putRecvBuf() // nothing to read: wait without a buffer
			return false
		}
		c.rn, c.roobn, c.rflags, c.rerr = n, oobn, flags, err
		return true
	}
}

// putRecvBuf gives the receive buffer back to recvBufs.
func (c *Conn) putRecvBuf() {
	if c.rbuf == nil {
		return
	}
	select {
	case recvBufs <- c.rbuf:
	default:
	}
	c.rbuf = nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	for {
		n, err := sendmsg(int(fd), c.wcur, c.woobcur, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		c.wn, c.werr = n, err
		return true
	}
}

// Send sends m as a notice (request id 0) with the descriptors it carries
// (len(fds) must equal m.FDs()). It does not close fds.
func (c *Conn) Send(m Message, fds ...int) error { return c.send(context.Background(), 0, m, fds) }

// TrySend sends m as a notice, as Send does, on a connection served by a
// Server only when the connection's queue has room for it below half of
// either bound, waiting up to wait for that room (the caller's goroutine
// waits, no other); past it, it returns an error wrapping ErrQueueFull
// and, unlike Send, leaves the connection open. It is for notices that
// another client's request causes (a cut-through session's Accepted to
// its listening app): a burst of those waits for the writer as a burst of
// SYNs waits in a listen queue, and a flood is refused to the clients that
// cause it, instead of overflowing the queue of a client that reads, only
// slower than they come, and dropping it. On a Conn no Server serves it
// is Send.
func (c *Conn) TrySend(wait time.Duration, m Message, fds ...int) error {
	if q := c.q.Load(); q != nil {
		if err := checkSend(m, fds); err != nil {
			return err
		}
		return q.push(0, m, fds, wait, true)
	}
	return c.send(context.Background(), 0, m, fds)
}

// SendID sends m with request id id; see Send.
func (c *Conn) SendID(id uint32, m Message, fds ...int) error {
	return c.send(context.Background(), id, m, fds)
}

// SendContext is SendID bounded by ctx: the write deadline follows ctx's
// deadline and cancellation for the duration of the call, and is cleared
// afterwards.
func (c *Conn) SendContext(ctx context.Context, id uint32, m Message, fds ...int) error {
	return c.send(ctx, id, m, fds)
}

func (c *Conn) send(ctx context.Context, id uint32, m Message, fds []int) (err error) {
	if err := checkSend(m, fds); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("api: send %v: %w", m.Type(), err)
	}
	if q := c.q.Load(); q != nil {
		return q.push(id, m, fds, 0, false)
	}
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("api: send %v: %w", m.Type(), ctx.Err())
	}
	defer func() { <-c.wsem }()
	if ctx.Done() != nil {
		if d, ok := ctx.Deadline(); ok {
			c.uc.SetWriteDeadline(d)
		}
		done := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			c.uc.SetWriteDeadline(time.Unix(1, 0))
			close(done)
		})
		defer func() {
			if !stop() {
				<-done
			}
			c.uc.SetWriteDeadline(time.Time{})
			// The write deadline is ctx's: a write that ran into it
			// failed for ctx, whose own timer may not have fired yet.
			if cerr := ctx.Err(); err != nil && (cerr != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
				if cerr == nil {
					cerr = context.DeadlineExceeded
				}
				err = fmt.Errorf("api: send %v: %w", m.Type(), cerr)
			}
		}()
	}
	if sr, ok := m.(*ShowReply); ok && len(sr.JSON) > maxShowChunk {
		return c.sendContinuedLocked(id, sr.JSON)
	}
	b, err := c.enc.record(c.wbuf[:0], id, 0, m)
	if err != nil {
		return fmt.Errorf("api: send %v: %w", m.Type(), err)
	}
	c.wbuf = b
	c.woob = appendRights(c.woob[:0], fds)
	return c.writeLocked(b, c.woob)
}

// checkSend checks the arguments of a send.
func checkSend(m Message, fds []int) error {
	if m == nil {
		return fmt.Errorf("api: send: nil message")
	}
	if len(fds) != m.FDs() || len(fds) > MaxFDs {
		return fmt.Errorf("api: send %v: %w: it carries %d, got %d", m.Type(), ErrBadFDs, m.FDs(), len(fds))
	}
	for _, fd := range fds {
		if fd < 0 {
			return fmt.Errorf("api: send %v: %w: descriptor %d", m.Type(), ErrBadFDs, fd)
		}
	}
	return nil
}

// sendQueued queues m on a connection served by a Server, waiting up to
// wait for room in the queue.
func (c *Conn) sendQueued(q *outQueue, id uint32, m Message, fds []int, wait time.Duration) error {
	return c.sendQueuedRelease(q, id, m, fds, wait, nil)
}

// sendQueuedRelease is sendQueued with release called once m left the
// queue or was dropped, or at once when it is not queued.
func (c *Conn) sendQueuedRelease(q *outQueue, id uint32, m Message, fds []int, wait time.Duration, release func()) error {
	if err := checkSend(m, fds); err != nil {
		if release != nil {
			release()
		}
		return err
	}
	return q.pushRelease(id, m, fds, wait, false, release)
}

// sendContinuedLocked sends a JSON document too long for one record as
// ShowReply records with FlagMore on all but the last.
func (c *Conn) sendContinuedLocked(id uint32, doc []byte) error {
	if len(doc) > MaxReassembled {
		return fmt.Errorf("api: send %v: %w: %d bytes, limit %d", TypeShowReply, ErrTooLarge, len(doc), MaxReassembled)
	}
	for off := 0; off < len(doc); off += maxShowChunk {
		end := min(off+maxShowChunk, len(doc))
		var flags Flags
		if end < len(doc) {
			flags = FlagMore
		}
		b, err := c.enc.record(c.wbuf[:0], id, flags, &ShowReply{JSON: doc[off:end]})
		if err != nil {
			return fmt.Errorf("api: send %v: %w", TypeShowReply, err)
		}
		c.wbuf = b
		if err := c.writeLocked(b, nil); err != nil {
			return err
		}
	}
	return nil
}

func (c *Conn) writeLocked(b, oob []byte) error {
	c.wcur, c.woobcur = b, oob
	err := c.rc.Write(c.writeFn)
	c.wcur, c.woobcur = nil, nil
	if err != nil {
		return c.ioError("send", err)
	}
	if c.werr != nil {
		return c.ioError("sendmsg", c.werr)
	}
	if c.wn != len(b) {
		return fmt.Errorf("api: sendmsg: sent %d of %d bytes", c.wn, len(b))
	}
	return nil
}

// cmsgLenSize is the size of the cmsg_len field of struct cmsghdr (size_t).
const cmsgLenSize = unix.SizeofCmsghdr - 8

// appendRights appends an SCM_RIGHTS control message carrying fds to b.
func appendRights(b []byte, fds []int) []byte {
	if len(fds) == 0 {
		return b
	}
	start := len(b)
	space := unix.CmsgSpace(4 * len(fds))
	b = append(b, make([]byte, space)...)
	h := b[start:]
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(h, uint64(unix.CmsgLen(4*len(fds))))
	} else {
		binary.NativeEndian.PutUint32(h, uint32(unix.CmsgLen(4*len(fds))))
	}
	binary.NativeEndian.PutUint32(h[cmsgLenSize:], uint32(unix.SOL_SOCKET))
	binary.NativeEndian.PutUint32(h[cmsgLenSize+4:], uint32(unix.SCM_RIGHTS))
	data := h[unix.CmsgLen(0):]
	for i, fd := range fds {
		binary.NativeEndian.PutUint32(data[4*i:], uint32(fd))
	}
	return b
}

// parseRights returns the descriptors of every SCM_RIGHTS message in oob.
// ok is false when oob is not a well-formed sequence of control messages;
// the descriptors found up to then are still returned, to be closed.
func parseRights(oob []byte) (fds []int, ok bool) {
	hdr := unix.CmsgLen(0)
	for len(oob) > 0 {
		if len(oob) < unix.SizeofCmsghdr {
			return fds, false
		}
		var l uint64
		if cmsgLenSize == 8 {
			l = binary.NativeEndian.Uint64(oob)
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob))
		}
		level := int32(binary.NativeEndian.Uint32(oob[cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(oob[cmsgLenSize+4:]))
		if l < uint64(hdr) || l > uint64(len(oob)) {
			return fds, false
		}
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			for data := oob[hdr:l]; len(data) >= 4; data = data[4:] {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data))))
			}
		}
		next := unix.CmsgSpace(int(l) - hdr)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds, true
}

// closeFDs closes descriptors received from a peer.
func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// CloseFDs closes the descriptors a Recv returned, for callers that do not
// want them.
func CloseFDs(fds []int) { closeFDs(fds) }
