package datapath

import (
	"errors"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// The kernel path: datagrams larger than one frame that the kernel
// reassembles.
//
// The XDP program gives the kernel every fragment of a datagram whose
// first fragment did not come first (a reordered one; a later fragment has
// no UDP header to match), besides those of ports the daemon does not
// serve; the worker reassembles the rest (fragment.go). The kernel
// reassembles them, bounded per namespace (net.ipv4.ipfrag_high_thresh,
// ipfrag_time and their IPv6 twins), dropping overlaps (RFC 5722) and
// counting every failure (ReasmFails), and delivers the datagram to the
// socket bound to its port: for a port the daemon serves, that is the
// udp.Reservation holding it, which the Engine opens
// (udp.Reservation.Open) and reads (kernelRx, on the peerWatch goroutine)
// into the Target's rx fifo like any other datagram. Fragments of ports
// the daemon does not serve reach their kernel sockets untouched. The
// program also gives the kernel every UDP frame longer than one buffer
// (udp_multi_buffer): a sender's segmentation burst, several datagrams
// under one header that the kernel cuts, or a datagram behind a link
// whose MTU is longer than a frame; they come this way too (chain.go).
//
// On send, a datagram that does not fit one frame (a UMEM frame, or the
// interface's MTU) goes out through the same socket (txKernel): the
// kernel fragments it to the path MTU, learned from ICMP "fragmentation
// needed" and "packet too big". So does every datagram to a multicast
// group (sendKernel): the kernel gives it the socket's multicast TTL or
// hop limit (1) and loops a copy to the host's members of the group. So
// does every datagram to an address of this host (a local route: loopback,
// one of the namespace's addresses; or the unspecified address, which the
// kernel takes for this host): out of the link it would reach no one,
// and the kernel delivers it to the host's socket of its port, a kernel
// program's or another app's reservation, as it does a kernel socket's.
// Only from an app whose process runs in the interface's namespace
// (udp.Target.HostReach), which could send it with a kernel socket of its
// own; an app elsewhere gets no way in to the host's loopback, and its
// datagram is dropped as no-route.
//
// Unless the app asked for no fragments (fifo.DgramFlagDontFragment):
// then a datagram whose IP packet exceeds the path MTU (the route's MTU
// the resolver read, else the interface's) is dropped, counted as
// tx-dont-fragment, and reported to the app as EMSGSIZE (tooBig), as a
// kernel socket with IP_PMTUDISC_DO refuses the send; one that fits goes
// out whole, with DF set (IPv4): in a frame of its own, or through the
// socket in IP_PMTUDISC_DO mode (IPV6_DONTFRAG), so that the kernel
// refuses rather than fragments it should its path MTU be smaller.
//
// When the socket's send buffer is full (EAGAIN: the link has not sent
// what it queued yet), nothing is dropped: a datagram larger than a frame
// stays at the head of the app's tx fifo, which then fills and holds the
// app back, and one in a frame is held like a datagram whose next hop
// resolves (tx.go), behind which the session's later datagrams queue, as
// on a kernel socket (another session's go on: each has a socket of its
// own);
// the worker tries again every kernelRetry, and counts each such datagram
// once (TxKernelWaits). Only a held one still refused after holdFor is
// dropped (tx-kernel).
//
// The frames the worker queued for the AF_XDP socket before a datagram it
// sends through the kernel are flushed first, so that a session's
// datagrams leave in the order it queued them. A qdisc on the interface
// that delays packets (a shaper) still reorders them: AF_XDP frames do not
// pass through it, the kernel path's packets do.

// kernelBufs are kernelRx's buffers (one set, the peerWatch goroutine's).
type kernelBufs struct {
	buf []byte
	oob []byte
	hs  [1]fifo.DgramHeader
	ps  [1][]byte
}

func newKernelBufs() kernelBufs {
	return kernelBufs{buf: make([]byte, 65536), oob: make([]byte, 128)}
}

// kernelRxBudget bounds the datagrams read from one socket per wake-up.
const kernelRxBudget = 64

// kernelReader is what reads an opened kernel path: its socket, and the
// Target whose datagrams come through it (a wildcard listener's also
// carries those to its port's sharers).
type kernelReader struct {
	t   *udp.Target
	res *udp.Reservation
}

// openKernelPathLocked opens res (nil: none) as t's kernel path and
// watches it for datagrams. e.mu is held.
func (e *Engine) openKernelPathLocked(t *udp.Target, res *udp.Reservation) {
	if res == nil || e.pw == nil {
		return
	}
	if err := res.Open(); err != nil {
		e.log.Warn("kernel path not opened: datagrams larger than a frame are lost", "local", t.Local, "err", err)
		return
	}
	t.Res = res
	e.watchKernelLocked(t, res)
}

// watchKernelLocked has peerWatch read res, opened, into t (kernelRx).
// e.mu is held.
func (e *Engine) watchKernelLocked(t *udp.Target, res *udp.Reservation) {
	fd := res.FD()
	ev := &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	op := unix.EPOLL_CTL_ADD
	if e.watched[fd] != nil {
		op = unix.EPOLL_CTL_MOD // a connected session's, watched for errors already
	}
	if err := unix.EpollCtl(e.pw.epfd, op, fd, ev); err != nil {
		e.log.Warn("kernel path not watched", "local", t.Local, "err", err)
		return
	}
	e.krx[fd] = kernelReader{t: t, res: res}
}

// closeKernelPathLocked stops reading t's kernel path. e.mu is held.
func (e *Engine) closeKernelPathLocked(t *udp.Target) {
	res := t.KernelSocket()
	if res == nil {
		return
	}
	fd := res.FD()
	if e.krx[fd].t == t {
		delete(e.krx, fd)
		if e.watched[fd] == nil && e.pw != nil {
			_ = unix.EpollCtl(e.pw.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
}

// kernelRx queues what the kernel delivered to the socket fd in its
// Target's rx fifo, or, for a datagram to the address of a listener that
// shares the socket's port (sharers), in that listener's: the kernel has
// one socket for both, and gives it what a socket bound to the specific
// address would have got.
func (e *Engine) kernelRx(fd int, kb *kernelBufs) {
	e.mu.Lock()
	defer e.mu.Unlock()
	kr := e.krx[fd]
	if kr.t == nil || e.closed {
		return
	}
	res, port := kr.res, kr.res.Addr().Port()
	wildcard := res.Addr().Addr().IsUnspecified()
	signal := false
	for range kernelRxBudget {
		n, from, dst, err := res.Recv(kb.buf, kb.oob)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			// A connected session's socket error (an ICMP
			// unreachable) comes with the read before the data, and
			// the read clears it: its app hears it as from peerError.
			var errno unix.Errno
			if c := e.watched[fd]; c != nil && errors.As(err, &errno) && icmpErrno(errno) {
				e.tellPeerErrorLocked(c, errno)
			} else {
				e.kernelDrops.Add(1)
			}
			continue
		}
		h := &kb.hs[0]
		*h = fifo.DgramHeader{Family: flow.Family4, Remote: flow.AddrBytes(from.Addr().Unmap()), RemotePort: from.Port(),
			Local: flow.AddrBytes(dst.Unmap()), LocalPort: port}
		if from.Addr().Unmap().Is6() {
			h.Family = flow.Family6
		}
		kb.ps[0] = kb.buf[:n]
		t := kr.t
		if wildcard {
			if s := e.sharers[netip.AddrPortFrom(dst.Unmap(), port)]; s != nil {
				t = s
			}
		}
		if !e.deliverKernel(t, kb) {
			continue
		}
		if t == kr.t {
			signal = true
		} else if t.Signal() {
			_ = t.Events.Signal()
		}
	}
	if signal && kr.t.Signal() {
		_ = kr.t.Events.Signal()
	}
}

// deliverKernel queues kb's datagram in t's rx fifo, counted, and reports
// whether it went in.
func (e *Engine) deliverKernel(t *udp.Target, kb *kernelBufs) bool {
	if !t.Lock() {
		t.Unlock()
		return false
	}
	r := t.DeliverBatch(kb.hs[:], kb.ps[:])
	t.Unlock()
	if r.Delivered == 0 {
		e.kernelDrops.Add(1)
		t.DropFull.Add(r.Full)
		t.DropTooBig.Add(r.TooBig)
		t.DropCorrupt.Add(r.Corrupt)
		return false
	}
	e.kernelRxN.Add(1)
	t.Delivered.Add(1)
	t.RxBytes.Add(r.Bytes)
	return true
}

// kernelSend is what txKernel did with a datagram.
type kernelSend uint8

const (
	kernelNone   kernelSend = iota // t has no kernel path: the caller drops the datagram
	kernelDone                     // sent, or refused for good (counted)
	kernelFull                     // the socket's send buffer is full: the datagram waits (below)
	kernelBehind                   // a held datagram holds it (holds): it waits behind it
)

// kernelRetry is how often a worker tries again a datagram the kernel
// path's socket had no room for, and how long it sleeps at most while one
// waits. A kernel socket's sender would sleep until the room came; the
// worker, which serves other sessions meanwhile, looks again: the room
// comes as the link sends what the socket queued (the socket's send
// buffer, 208 KiB by default, is many datagrams).
const kernelRetry = 100 * time.Microsecond

// txKernel sends a datagram of t that does not fit a frame (or the path
// MTU) through t's kernel socket. A datagram sent or refused for good is
// counted here; one the socket had no room for (EAGAIN: its send buffer
// is full of what the link has not sent yet) is the caller's to keep and
// try again, in order, as a kernel socket's sender would wait.
func (w *worker) txKernel(t *udp.Target, hd *held, payload []byte) kernelSend {
	res := t.KernelSocket()
	if res == nil {
		return kernelNone
	}
	dst := netip.AddrPortFrom(flow.AddrFrom(hd.key.addr, hd.key.fam), hd.dport)
	if err := res.Send(payload, dst, hd.src, w.tx.oob[:], hd.df); err != nil {
		switch {
		case hd.df && errors.Is(err, unix.EMSGSIZE):
			w.tooBig(t)
		case errors.Is(err, unix.EAGAIN):
			return kernelFull
		default:
			w.c.Drops[dropTxKernel]++
			t.TxDrops.Add(1)
		}
		return kernelDone
	}
	w.c.TxKernel++
	t.Sent.Add(1)
	t.TxBytes.Add(uint64(len(payload)))
	return kernelDone
}

// txBig sends the next datagram of t's tx fifo, which does not fit a
// frame, through the kernel, copied into the worker's big buffer. It
// leaves the datagram in the fifo when the socket has no room
// (kernelFull) or while a held datagram holds it (kernelBehind): t then
// waits (see wait). It reports kernelNone when t
// has no kernel path or the datagram is longer than any (the caller drops
// it).
func (w *worker) txBig(t *udp.Target, h *fifo.DgramHeader) kernelSend {
	if t.KernelSocket() == nil {
		return kernelNone
	}
	if w.big == nil {
		w.big = make([]byte, 65536)
	}
	a, b, err := t.Tx.PeekDgram(h)
	if err != nil || int(h.Len) > len(w.big) {
		return kernelNone
	}
	n := copy(w.big, a)
	n += copy(w.big[n:], b)
	r := kernelDone
	hd := held{t: t}
	switch {
	case !w.tx.destination(t, h, &hd):
		w.c.Drops[dropTxBadHeader]++
		t.TxDrops.Add(1)
	case !t.HostReach && w.tx.neighbour(hd.key).local:
		// To the host itself from an app outside the interface's
		// namespace: as in txState.send, it reaches none of the host's
		// sockets (the kernel would deliver it).
		w.c.Drops[dropNoRoute]++
		t.TxDrops.Add(1)
	case hd.df && !w.tx.fitsPath(&hd, n):
		w.tooBig(t)
	case w.tx.holder(&hd) != nil:
		return kernelBehind
	default:
		w.tx.flush() // the frames queued before it leave first
		r = w.txKernel(t, &hd, w.big[:n])
	}
	if r == kernelDone {
		t.KernelWait = false
		if _, err := t.Tx.DropDgram(); err != nil {
			// The app rewrote the record since the peek.
			w.c.Drops[dropTxCorrupt]++
			t.TxCorrupt.Add(1)
		}
	}
	return r
}

// knownLocal reports whether a is an address the kernel takes for this
// host, as far as the worker knows without asking the kernel: loopback,
// unspecified, or an address of the namespace (Engine.local, else
// Config.Addrs of the interface served).
func (w *worker) knownLocal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	if l := w.e.local; l != nil {
		return l.IsLocal(l.FIB(), a)
	}
	c := w.e.cfg.Addrs
	return c != nil && c.HasAddress(w.e.ifc.Index, a)
}

// wait notes that t's next datagram waits for room in t's kernel socket
// (full), behind held datagrams, or for a hold slot: drainTx leaves t
// until retryWaiting marks it again, kernelRetry later.
func (x *txState) wait(t *udp.Target, full bool) {
	if full && !t.KernelWait {
		t.KernelWait = true
		x.w.c.TxKernelWaits++ // once per datagram
	}
	for _, u := range x.waiting {
		if u == t {
			return
		}
	}
	if len(x.waiting) == 0 {
		x.waitSince = x.now
	}
	x.waiting = append(x.waiting, t)
}

// retryWaiting gives the waiting Targets to drainTx again once
// kernelRetry passed.
func (x *txState) retryWaiting() {
	if len(x.waiting) == 0 || x.now.Sub(x.waitSince) < kernelRetry {
		return
	}
	for i, t := range x.waiting {
		t.More = true
		x.waiting[i] = nil
	}
	x.waiting = x.waiting[:0]
}

// kernelWaiting reports whether a datagram waits for room in a kernel
// socket: the worker then sleeps at most kernelRetry.
func (x *txState) kernelWaiting() bool {
	if len(x.waiting) > 0 {
		return true
	}
	for i := range x.held {
		if x.held[i].kernel {
			return true
		}
	}
	return false
}

// fitsPath reports whether a datagram of plen payload bytes to hd's
// destination fits one IP packet of the path MTU as known now: the
// interface's, or the route's when the resolver has read a smaller one.
func (x *txState) fitsPath(hd *held, plen int) bool {
	mtu := x.mtu
	if nb := x.neighbour(hd.key); nb.ok && nb.mtu > 0 && nb.mtu < mtu {
		mtu = nb.mtu
	}
	ip := frame.IPv4HeaderLen
	if hd.key.fam == flow.Family6 {
		ip = frame.IPv6HeaderLen
	}
	return ip+frame.UDPHeaderLen+plen <= mtu
}

// tooBig drops a don't-fragment datagram of t that exceeds the path MTU:
// it counts it and tells t's app EMSGSIZE (fifo.EventError for t's
// handle), which the app's next read or write on the session or listener
// returns. A full event queue loses the report, as a kernel socket's
// error is overwritten by the next; the drop is counted either way.
func (w *worker) tooBig(t *udp.Target) {
	w.c.Drops[dropTxDontFragment]++
	t.TxDrops.Add(1)
	// A datagram held for its next hop may outlive its session and its
	// app (retryHeld sends it as it would have gone): the app's memory,
	// its event queue's, is freed once every worker ran a posted function
	// after the Kill, so a Target alive here keeps it through this loop,
	// and a dead one is told nothing.
	if t.Events == nil || t.Dead() {
		return
	}
	if t.Events.Push(fifo.Event{Type: fifo.EventError, Handle: uint64(t.Handle), Arg32: uint32(unix.EMSGSIZE)}) == nil {
		_ = t.Events.Signal()
	}
}

// icmpErrno reports whether errno is one the kernel sets as a UDP socket's
// error for an ICMP error (icmp_err_convert's, and EMSGSIZE of a
// don't-fragment socket), not one of recvmsg's own.
func icmpErrno(errno unix.Errno) bool {
	switch errno {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET,
		unix.ENOPROTOOPT, unix.EOPNOTSUPP, unix.EACCES, unix.EPROTO, unix.EMSGSIZE:
		return true
	}
	return false
}
