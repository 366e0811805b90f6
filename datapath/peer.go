package datapath

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
)

// peerWatch finds the ICMP errors of connected sessions' peers. The
// reservation socket of a connected session is connected to the peer, so
// the kernel (which the XDP program leaves ICMP to) reports the peer's
// port, host or network unreachable to it as a socket error; an epoll set
// of those sockets wakes a goroutine that hands the error to the session's
// app (fifo.EventError with the errno), as the kernel reports it on a
// connected UDP socket: the session stays open.
type peerWatch struct {
	epfd int // epoll set of the claimed sessions' reservation sockets and stop
	stop int // eventfd: Close wakes the goroutine
}

func newPeerWatch() (*peerWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stop, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stop)}); err != nil {
		unix.Close(epfd)
		unix.Close(stop)
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	return &peerWatch{epfd: epfd, stop: stop}, nil
}

func (p *peerWatch) close() error {
	return errors.Join(unix.Close(p.epfd), unix.Close(p.stop))
}

// wake makes run return.
func (p *peerWatch) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(p.stop, one[:])
}

// watchLocked adds a claimed session's socket to the set. A socket that
// got its error before is reported at once (level-triggered). Only the
// error events are asked for: the socket never has data.
func (e *Engine) watchLocked(c *connectedSession) {
	if e.pw == nil {
		return
	}
	fd := c.res.FD()
	if err := unix.EpollCtl(e.pw.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Fd: int32(fd)}); err != nil {
		e.log.Warn("peer errors of a connected session not watched", "handle", uint64(c.h), "err", err)
		return
	}
	e.watched[fd] = c
}

// unwatchLocked forgets c's socket and takes it out of the epoll set
// unless its kernel path is still read: it closes later, once the program
// no longer steers its 5-tuple (handback.go), and an error or datagram
// meanwhile would wake runPeerErrors for nothing, again and again.
func (e *Engine) unwatchLocked(c *connectedSession) {
	if fd := c.res.FD(); fd >= 0 && e.watched[fd] == c {
		delete(e.watched, fd)
		if _, reading := e.krx[fd]; !reading && e.pw != nil {
			_ = unix.EpollCtl(e.pw.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
}

// runPeerErrors waits for peer errors until Close.
func (e *Engine) runPeerErrors() {
	evs := make([]unix.EpollEvent, 16)
	kb := newKernelBufs()
	for {
		n, err := unix.EpollWait(e.pw.epfd, evs, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			e.log.Error("peer errors: epoll wait", "err", err)
			return
		}
		for _, ev := range evs[:n] {
			if int(ev.Fd) == e.pw.stop {
				return
			}
			if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				e.peerError(int(ev.Fd))
			}
			if ev.Events&unix.EPOLLIN != 0 {
				e.kernelRx(int(ev.Fd), &kb)
			}
		}
	}
}

// peerError hands the error socket fd reported to its session's app.
func (e *Engine) peerError(fd int) {
	e.mu.Lock()
	c := e.watched[fd]
	if c == nil || e.closed {
		e.mu.Unlock()
		return
	}
	err := c.res.Err() // reads and clears it
	if err == nil {
		e.mu.Unlock()
		return
	}
	h := c.h
	var errno unix.Errno
	if !errors.As(err, &errno) {
		e.peerErrors.Add(1)
		e.mu.Unlock()
		e.log.Warn("connected session: socket error unread", "handle", uint64(h), "err", err)
		return
	}
	e.tellPeerErrorLocked(c, errno)
	e.mu.Unlock()
	e.log.Debug("connected session: peer error", "handle", uint64(h), "remote", c.remote, "err", err)
}

// tellPeerErrorLocked pushes the socket error errno of c's reservation to
// its app. e.mu is held: the session's close (closeConnLocked) takes it
// before the app's memory, its event queue's, can be freed, so a session
// not closed here keeps it until the push is done. A full event queue
// loses it, as a socket error is overwritten by the next.
func (e *Engine) tellPeerErrorLocked(c *connectedSession, errno unix.Errno) {
	e.peerErrors.Add(1)
	if t := c.target; !c.closed && t != nil && t.Events != nil &&
		t.Events.Push(fifo.Event{Type: fifo.EventError, Handle: uint64(c.h), Arg32: uint32(errno)}) == nil {
		_ = t.Events.Signal()
	}
}
