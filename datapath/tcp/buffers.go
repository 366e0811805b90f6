package tcp

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Memory of the Conns' gVisor buffers.
//
// What a connection holds in gVisor beyond the app's fifos is its send and
// receive buffers: the bytes the peer sent that the rx fifo has no room
// for (the app does not read), and the bytes taken from the tx fifo that
// the peer has not acknowledged (it does not read). An app that opens
// connections and reads none of them makes the daemon hold each one's
// receive buffer, in the daemon's memory, not in the app's segments. So
// the Stack accounts for every Conn's buffer sizes, as Linux's tcp_mem
// bounds what all sockets hold: Options.BufferBytes bounds all Conns
// together and Options.GroupBufferBytes those of one group of owners
// (Options.BufferGroup: the daemon makes one of a user's apps). A Conn
// that would go past its group's bound gets buffers of ClampedBuffer
// bytes each, until the group holds twice its bound; one past that, or
// for which even those do not fit under the Stack's bound, is refused
// (ErrTooManyConns; an accepted one is reset). Buffers grow (gVisor's
// receive buffer moderation, its send buffer tuning) only as far as both
// bounds allow. The sizes are accounted, not what is in the buffers: a
// Conn that holds nothing still counts its sizes. So the Conns' buffers
// never take more than BufferBytes in all, and one group's more than twice
// GroupBufferBytes.

// ClampedBuffer is the size of each gVisor buffer of a Conn whose group
// had no room left under its bound. Smaller ones make gVisor crawl: over
// the tests' in-process wire, 50 connections one after the other, each
// sending 256 KiB right after its connect, took 200 ms each with 16 KiB
// buffers each way, 2.8 ms with 32 KiB, 1.8 ms with 64 KiB and 1.4 ms
// unclamped.
const ClampedBuffer = 64 << 10

// defaultBufferBytes is Options.BufferBytes when it is 0: an eighth of the
// machine's memory (Linux's tcp_mem allows about a tenth by default), at
// least 256 MiB.
func defaultBufferBytes() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 1 << 30
	}
	return max(int64(uint64(si.Totalram)*uint64(si.Unit)/8), 256<<20)
}

// BufferUse is what the Conns' gVisor buffers take (Stats.Buffers).
type BufferUse struct {
	// Bytes is the sum of the live Conns' send and receive buffer sizes;
	// Limit and GroupLimit are Options.BufferBytes and GroupBufferBytes.
	Bytes, Limit, GroupLimit int64
	// Clamped counts the Conns that got ClampedBuffer buffers, Held the
	// buffer growths gVisor's tuning asked for and the bounds refused.
	Clamped, Held uint64
}

// chargeBuffers accounts for c's gVisor buffers as its endpoint has them,
// or clamps them to ClampedBuffer when c's group has no room for them; it
// refuses c (ErrTooManyConns) when the Stack has no room even for those.
// Called once, when c's endpoint is set, before c starts.
func (s *Stack) chargeBuffers(c *Conn) error {
	o := c.ep.SocketOptions()
	rcv, snd := o.GetReceiveBufferSize(), o.GetSendBufferSize()
	s.mu.Lock()
	fits := s.bufBytes+rcv+snd <= s.opts.BufferBytes && s.groupBuf[c.group]+rcv+snd <= s.opts.GroupBufferBytes
	if !fits {
		rcv, snd = min(rcv, ClampedBuffer), min(snd, ClampedBuffer)
		// Past its bound a group may grow by as much again in clamped
		// Conns, and no further: one group alone cannot take the
		// whole Stack's room with them.
		var err error
		switch g, gb := s.groupBuf[c.group], s.opts.GroupBufferBytes; {
		case s.bufBytes+rcv+snd > s.opts.BufferBytes:
			err = fmt.Errorf("%w: the connections' buffers take %d bytes of the %d they may", ErrTooManyConns, s.bufBytes, s.opts.BufferBytes)
		case g+rcv+snd-gb > gb:
			err = fmt.Errorf("%w: the buffers of the owner's group take %d bytes, twice its bound of %d", ErrTooManyConns, g, gb)
		}
		if err != nil {
			s.mu.Unlock()
			s.refused.Add(1)
			return err
		}
		s.bufClamped++
	}
	s.bufBytes += rcv + snd
	s.groupBuf[c.group] += rcv + snd
	c.rcvBuf.Store(rcv)
	c.sndBuf.Store(snd)
	s.mu.Unlock()
	if !fits {
		o.SetReceiveBufferSize(rcv, true)
		o.SetSendBufferSize(snd, true)
	}
	return nil
}

// growRcvBuf lets gVisor's receive buffer moderation grow c's receive
// buffer after the pump moved n bytes into the rx fifo, as far as the
// bounds allow: a growth past them is undone, and c's buffer stays at the
// size it had (gVisor then stops tuning it). Pump only.
func (c *Conn) growRcvBuf(n int) {
	c.ep.ModerateRecvBuf(n)
	o := c.ep.SocketOptions()
	if size := o.GetReceiveBufferSize(); size > c.rcvBuf.Load() {
		if now, undo := c.s.grow(c, &c.rcvBuf, size); undo {
			o.SetReceiveBufferSize(now, true)
		}
	}
}

// growSndBuf does the same for gVisor's send buffer, which gVisor grows
// with the congestion window as acknowledgements come. Whoever runs c.
func (c *Conn) growSndBuf() {
	o := c.ep.SocketOptions()
	if size := o.GetSendBufferSize(); size > c.sndBuf.Load() {
		if now, undo := c.s.grow(c, &c.sndBuf, size); undo {
			o.SetSendBufferSize(now, true)
		}
	}
}

// grow accounts for one of c's buffers (*acct, written under s.mu) having
// grown to size, and reports whether the bounds refuse it: then the
// buffer is to be set back to now, the size accounted.
func (s *Stack) grow(c *Conn, acct *atomic.Int64, size int64) (now int64, undo bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now = acct.Load()
	if size <= now || c.sndBuf.Load() == 0 || c.rcvBuf.Load() == 0 { // no growth, or c not charged or released
		return now, false
	}
	d := size - now
	if s.bufBytes+d > s.opts.BufferBytes || s.groupBuf[c.group]+d > s.opts.GroupBufferBytes {
		s.bufHeld++
		return now, true
	}
	s.bufBytes += d
	s.groupBuf[c.group] += d
	acct.Store(size)
	return size, false
}

// releaseBuffersLocked gives back what chargeBuffers and grow accounted
// for c (s.mu held).
func (s *Stack) releaseBuffersLocked(c *Conn) {
	b := c.rcvBuf.Load() + c.sndBuf.Load()
	if b == 0 {
		return
	}
	c.rcvBuf.Store(0)
	c.sndBuf.Store(0)
	s.bufBytes -= b
	if s.groupBuf[c.group] -= b; s.groupBuf[c.group] <= 0 {
		delete(s.groupBuf, c.group)
	}
}
