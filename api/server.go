package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// Request is one request received by a Server.
type Request struct {
	ID  uint32
	Msg Message
	// FDs are the descriptors the request carried (none for the requests
	// of this version); the handler owns them.
	FDs []int
	// Peer is the identity of the client process (SO_PEERCRED, taken
	// when it connected), for the handler to authorize the request.
	Peer Cred
	// Conn is the connection the request came on.
	Conn *Conn
}

// Handler opens the per-connection handler of each connection that said a
// compatible Hello. Open runs on the connection's goroutine; an error
// refuses the connection (the client gets it as an Error reply to its
// Hello).
type Handler interface {
	Open(c *Conn, hello *Hello) (ConnHandler, error)
}

// ConnHandler serves the requests of one connection, one at a time, in
// order, on the connection's goroutine. It may send notices on the Conn
// from any goroutine: they are queued (see Server) and never wait for the
// client.
type ConnHandler interface {
	// Handle returns the reply to req and the descriptors it carries (the
	// handler keeps ownership of them: the server sends duplicates), or an
	// error, which the client gets as an Error reply. A nil reply and nil
	// error send OK. ctx ends when the server stops; the connection is
	// then closed.
	Handle(ctx context.Context, req Request) (reply Message, fds []int, err error)
	// Close is called once when the connection ends, with the reason
	// (io.EOF when the client hung up; an error wrapping ErrSendTimeout,
	// ErrQueueFull or ErrIdle when the server dropped the client).
	Close(err error)
}

// Errors with which a Server ends a connection.
var (
	// ErrSendTimeout: a record to the client did not leave within
	// Server.SendTimeout, because the client does not read.
	ErrSendTimeout = errors.New("api: peer did not read within the send timeout")
	// ErrIdle: the client attached nothing and sent nothing for
	// Server.IdleTimeout.
	ErrIdle = errors.New("api: idle connection")
	// ErrHelloTimeout: the client did not say Hello within
	// Server.HelloTimeout.
	ErrHelloTimeout = errors.New("api: no hello in time")
	// ErrNotAccepted is the error of a record whose type (or flags, or
	// request id) the server does not accept in the connection's state:
	// anything but Hello before Hello, anything but a request after it,
	// a continuation record. It is an ErrMalformed, and is raised from the
	// record's header, before its body is decoded or reassembled.
	ErrNotAccepted error = &protoError{"api: message not accepted here"}
)

// Defaults of the Server's limits.
const (
	DefaultHelloTimeout = 5 * time.Second
	DefaultIdleTimeout  = 30 * time.Second
	DefaultSendTimeout  = 2 * time.Second
	DefaultQueueLen     = 64
	DefaultQueueBytes   = 4 << 20
	DefaultMaxConns     = 1024
	DefaultRootReserve  = 8
	// DefaultMaxConnsPerUID is twice the daemon's default bound on the
	// apps of a uid (each app holds one connection), leaving room for
	// its CLI and probes.
	DefaultMaxConnsPerUID = 128
	// DefaultMaxShows bounds the Show requests served at once: each
	// holds a document of up to MaxReassembled while it is built, queued
	// and written.
	DefaultMaxShows = 4
)

// Server serves control connections. A connection that sends a malformed,
// truncated, oversized, unknown or unexpected message gets an Error reply
// and is closed; the others carry on.
//
// Every reply and notice to a client goes through a bounded queue of its
// connection, written by a writer goroutine of that connection: a send
// never waits for the client (a full queue drops the client), every
// record must leave within SendTimeout or the client is dropped, and
// closing the connection or stopping the server ends a stuck write at
// once. The zero value of every limit below is its default; a negative
// value turns it off where that is allowed.
type Server struct {
	Handler Handler
	// Name is sent in HelloReply.
	Name string
	// HelloTimeout bounds the wait for a new connection's Hello; 0 means
	// DefaultHelloTimeout (5 s).
	HelloTimeout time.Duration
	// IdleTimeout closes a connection that has said Hello, has no app
	// attached (no successful Attach not undone by Detach), has started
	// no capture (a successful Capture: its frames stream while the
	// client, waiting for them, sends nothing) and sends no request for
	// that long; 0 means DefaultIdleTimeout (30 s), negative never.
	IdleTimeout time.Duration
	// SendTimeout bounds the time each record to a client may wait for
	// room in its socket; a client that does not read within it is
	// disconnected. 0 means DefaultSendTimeout (2 s).
	SendTimeout time.Duration
	// QueueLen bounds the messages queued for one client; 0 means
	// DefaultQueueLen (64). QueueBytes bounds their encoded size (one
	// message is always taken when the queue is empty); 0 means
	// DefaultQueueBytes (4 MiB). A reply waits up to twice SendTimeout for
	// room (the connection's own goroutine waits, no other), and finds none
	// past three quarters of either bound, which are the notices' alone; a
	// notice sent when the queue is full disconnects the client at once,
	// and one sent with Conn.TrySend finds no room past half of either
	// bound and is refused, the client kept.
	QueueLen   int
	QueueBytes int
	// MaxConns bounds the open connections: those past it are closed as
	// soon as they are accepted; 0 means DefaultMaxConns (1024), negative
	// no limit. RootReserve of them are kept for peers of uid 0 (the
	// CLI), so an administrator still gets in when others fill the rest;
	// 0 means DefaultRootReserve (8), negative none.
	MaxConns    int
	RootReserve int
	// MaxConnsPerUID bounds the open connections of one peer uid other
	// than 0, so that one user cannot take all of MaxConns and keep the
	// other users' apps out; those past it are closed as soon as they are
	// accepted. 0 means DefaultMaxConnsPerUID (128), negative no limit.
	MaxConnsPerUID int
	// MaxShows bounds the Show requests served at once, across all
	// connections: a Show holds one from before the handler builds its
	// document until the reply's last record left, or was dropped with
	// the connection. A peer other than root holds at most one at a time,
	// and such peers together all but one (kept for root, as RootReserve
	// keeps connections). A Show that finds none waits up to twice
	// SendTimeout, then gets an Error reply (flow.ErrLimit) and the
	// connection stays. The documents the handler builds for clients
	// asking at once, or asking without reading the replies, are thus at
	// most MaxShows, however many connections ask. 0 means
	// DefaultMaxShows (4), negative no limit.
	MaxShows int
	// Logf, if set, receives one line per connection dropped for a fault
	// of the client (with its pid and uid; at most maxDropLogs a second,
	// the next line counting those left out), and at most one line a
	// second about connections refused over MaxConns or MaxConnsPerUID.
	Logf func(format string, args ...any)

	accepted    atomic.Uint64
	active      atomic.Int64
	uidMu       sync.Mutex
	uidConns    map[uint32]int // guarded by uidMu: open connections by peer uid, 0 not counted
	disconnects [numDisconnectReasons]atomic.Uint64
	showRefused atomic.Uint64 // Show requests answered "try again": no slot (MaxShows)
	showsOnce   sync.Once
	shows       *showGate

	logMu       sync.Mutex
	lastLimit   time.Time // guarded by logMu: when refusals were last logged
	limitRefuse uint64    // guarded by logMu: refusals since then
	dropSecond  time.Time // guarded by logMu: start of the second drops are logged in
	dropLogged  int       // guarded by logMu: drop lines logged in it
	dropSkipped uint64    // guarded by logMu: drop lines left out since the last one
}

// maxDropLogs bounds the lines a second about dropped connections.
const maxDropLogs = 20

// DisconnectReason says why a Server ended a connection.
type DisconnectReason uint8

// Reasons for the end of a connection.
const (
	DisconnectHangup       DisconnectReason = iota // the client closed it
	DisconnectShutdown                             // the server stopped
	DisconnectClosed                               // the handler closed the Conn
	DisconnectHelloTimeout                         // no Hello within HelloTimeout
	DisconnectIdle                                 // nothing attached, nothing sent within IdleTimeout
	DisconnectSendTimeout                          // the client did not read within SendTimeout
	DisconnectQueueFull                            // the client's queue overflowed
	DisconnectMalformed                            // a record that does not decode
	DisconnectNotAccepted                          // a type, flag or id not accepted in the state
	DisconnectVersion                              // another major version
	DisconnectRefused                              // the Handler refused it in Open
	DisconnectConnLimit                            // refused at accept: over MaxConns or MaxConnsPerUID
	DisconnectError                                // a socket error
	numDisconnectReasons
)

var reasonNames = [numDisconnectReasons]string{
	"hangup", "shutdown", "closed", "hello_timeout", "idle_timeout", "send_timeout", "queue_full",
	"malformed", "not_accepted", "version", "refused", "conn_limit", "error",
}

func (r DisconnectReason) String() string {
	if r < numDisconnectReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason%d", uint8(r))
}

// ServerStats are a Server's counters.
type ServerStats struct {
	// Accepted counts the connections accepted, refused ones included.
	Accepted uint64
	// Active is the number of connections being served.
	Active int64
	// Disconnects counts ended connections by reason, indexed by
	// DisconnectReason (DisconnectConnLimit counts refusals).
	Disconnects [numDisconnectReasons]uint64
	// ShowsRefused counts the Show requests that found no slot (MaxShows)
	// and were answered with a limit error, their connections kept.
	ShowsRefused uint64
}

// ByReason returns the disconnect counters keyed by reason name.
func (st ServerStats) ByReason() map[string]uint64 {
	m := make(map[string]uint64, len(st.Disconnects))
	for r, n := range st.Disconnects {
		m[DisconnectReason(r).String()] = n
	}
	return m
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	// Accepted first: every connection it counts is in Active or
	// Disconnects by then (Serve).
	st := ServerStats{Accepted: s.accepted.Load()}
	st.Active = s.active.Load()
	st.ShowsRefused = s.showRefused.Load()
	for i := range st.Disconnects {
		st.Disconnects[i] = s.disconnects[i].Load()
	}
	return st
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Serve accepts connections on l and serves each on its own goroutine until
// ctx ends or l fails. It then closes l and every connection, waits for
// their goroutines (which never wait for a client), and returns nil after
// ctx ended or the accept error.
func (s *Server) Serve(ctx context.Context, l *Listener) error {
	var (
		mu    sync.Mutex
		conns = make(map[*Conn]struct{}) // guarded by mu
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	closed := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(closed)
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer func() {
		cancel() // runs the AfterFunc above, which closes every connection
		// Serve returns with the listener closed: its socket and lock
		// free for a daemon started next on the same path.
		<-closed
		wg.Wait()
	}()
	backoff := time.Duration(0)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrClosed) {
				return err
			}
			// Out of descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("api: accept: %v; retrying in %v", err, backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		backoff = 0
		peer := c.Peer()
		// Accepted is counted after the connection is counted as active
		// or refused, so that whoever reads Accepted first in Stats finds
		// each of those connections in the one or the other.
		if !s.admit(peer) {
			c.Close()
			s.disconnects[DisconnectConnLimit].Add(1)
			s.accepted.Add(1)
			s.logRefusal(peer)
			continue
		}
		s.accepted.Add(1)
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			s.release(peer)
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release(peer)
			s.ServeConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// showGate returns the server's bound on Show requests served at once.
func (s *Server) showGate() *showGate {
	s.showsOnce.Do(func() { s.shows = newShowGate(orDefault(s.MaxShows, DefaultMaxShows)) })
	return s.shows
}

// admit counts a new connection in, unless that takes it over MaxConns
// (less RootReserve for peers other than root) or its uid over
// MaxConnsPerUID.
func (s *Server) admit(p Cred) bool {
	maxConns := orDefault(s.MaxConns, DefaultMaxConns)
	if maxConns > 0 {
		limit := maxConns
		if p.UID != 0 {
			limit -= max(orDefault(s.RootReserve, DefaultRootReserve), 0)
		}
		if s.active.Load() >= int64(limit) {
			return false
		}
	}
	if p.UID != 0 {
		s.uidMu.Lock()
		n := s.uidConns[p.UID]
		if m := orDefault(s.MaxConnsPerUID, DefaultMaxConnsPerUID); m > 0 && n >= m {
			s.uidMu.Unlock()
			return false
		}
		if s.uidConns == nil {
			s.uidConns = make(map[uint32]int)
		}
		s.uidConns[p.UID] = n + 1
		s.uidMu.Unlock()
	}
	s.active.Add(1)
	return true
}

// release counts out a connection admit counted in.
func (s *Server) release(p Cred) {
	s.active.Add(-1)
	if p.UID == 0 {
		return
	}
	s.uidMu.Lock()
	if s.uidConns[p.UID]--; s.uidConns[p.UID] <= 0 {
		delete(s.uidConns, p.UID)
	}
	s.uidMu.Unlock()
}

// logRefusal logs refusals over MaxConns and MaxConnsPerUID, at most once
// a second.
func (s *Server) logRefusal(p Cred) {
	s.logMu.Lock()
	s.limitRefuse++
	now := time.Now()
	if now.Sub(s.lastLimit) < time.Second {
		s.logMu.Unlock()
		return
	}
	n := s.limitRefuse
	s.lastLimit, s.limitRefuse = now, 0
	s.logMu.Unlock()
	s.logf("api: refused %d connection(s) over the limits of %d in all and %d per uid (latest from pid %d uid %d)",
		n, orDefault(s.MaxConns, DefaultMaxConns), orDefault(s.MaxConnsPerUID, DefaultMaxConnsPerUID), p.PID, p.UID)
}

// logDrop logs a connection dropped for a fault of the client, at most
// maxDropLogs times a second.
func (s *Server) logDrop(p Cred, r DisconnectReason, err error) {
	if s.Logf == nil {
		return
	}
	s.logMu.Lock()
	now := time.Now()
	if now.Sub(s.dropSecond) >= time.Second {
		s.dropSecond, s.dropLogged = now, 0
	}
	if s.dropLogged >= maxDropLogs {
		s.dropSkipped++
		s.logMu.Unlock()
		return
	}
	s.dropLogged++
	skipped := s.dropSkipped
	s.dropSkipped = 0
	s.logMu.Unlock()
	if skipped > 0 {
		s.logf("api: pid %d uid %d: dropped (%v): %v (and %d more not logged)", p.PID, p.UID, r, err, skipped)
		return
	}
	s.logf("api: pid %d uid %d: dropped (%v): %v", p.PID, p.UID, r, err)
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// connEnd records the first reason given for the end of a connection.
type connEnd struct {
	ctx context.Context // the server's: once it ended, a close is the shutdown's

	mu     sync.Mutex
	set    bool             // guarded by mu
	reason DisconnectReason // guarded by mu
	err    error            // guarded by mu
}

func (e *connEnd) note(r DisconnectReason, err error) {
	e.mu.Lock()
	if !e.set {
		e.set, e.reason, e.err = true, r, err
	}
	e.mu.Unlock()
}

// noteSend records the failure of a send to the client.
func (e *connEnd) noteSend(err error) {
	r := DisconnectError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		r, err = DisconnectSendTimeout, fmt.Errorf("%w: %w", ErrSendTimeout, err)
	case errors.Is(err, ErrQueueFull):
		r = DisconnectQueueFull
	case errors.Is(err, io.EOF):
		r = DisconnectHangup
	case errors.Is(err, ErrClosed):
		r = DisconnectClosed
	}
	e.note(r, err)
}

func (e *connEnd) get() (DisconnectReason, error, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reason == DisconnectClosed && e.ctx.Err() != nil {
		return DisconnectShutdown, fmt.Errorf("api: server: %w", ErrClosed), e.set
	}
	return e.reason, e.err, e.set
}

// ServeConn serves one connection until it ends, then closes it. It
// returns when the peer hangs up, sends something malformed or
// unexpected, stops reading, idles, or c is closed, or ctx ends; it never
// waits for the client longer than SendTimeout (to flush a last Error
// reply), and not at all once ctx ended.
func (s *Server) ServeConn(ctx context.Context, c *Conn) {
	sendTimeout := orDefault(s.SendTimeout, DefaultSendTimeout)
	end := connEnd{ctx: ctx}
	q := newOutQueue(c, sendTimeout, orDefault(s.QueueLen, DefaultQueueLen), orDefault(s.QueueBytes, DefaultQueueBytes),
		func(err error) {
			end.noteSend(err)
			c.Close() // unblocks the receive
		})
	c.q.Store(q)
	go q.run()
	stop := context.AfterFunc(ctx, func() {
		end.note(DisconnectShutdown, fmt.Errorf("api: server: %w", ErrClosed))
		c.Close()
	})
	defer func() {
		stop()
		c.Close()
		<-q.done // at once: the queue stopped and the socket is closed
		r, err, _ := end.get()
		s.disconnects[r].Add(1)
		switch r {
		case DisconnectHangup, DisconnectShutdown, DisconnectClosed, DisconnectRefused:
		default:
			s.logDrop(c.Peer(), r, err)
		}
	}()
	c.SetMaxReassembled(1) // no request spans records; continuations are refused anyway
	var hello bool
	c.accept = func(h Header) error {
		switch {
		case h.Flags&FlagMore != 0:
			return malformed(ErrNotAccepted, "%v id %d: continuation record from a client", h.Type, h.ID)
		case h.ID == 0:
			return malformed(ErrNotAccepted, "%v with request id 0", h.Type)
		case !hello && h.Type != TypeHello:
			return malformed(ErrNotAccepted, "first message is %v, not Hello", h.Type)
		case hello && (!h.Type.IsRequest() || h.Type == TypeHello):
			return malformed(ErrNotAccepted, "%v with request id %d is not a request here", h.Type, h.ID)
		}
		return nil
	}

	c.SetReadDeadline(time.Now().Add(orDefault(s.HelloTimeout, DefaultHelloTimeout)))
	id, m, fds, err := c.RecvID()
	if err != nil {
		s.refuse(c, q, &end, id, err, ErrHelloTimeout, DisconnectHelloTimeout)
		return
	}
	closeFDs(fds)
	hello = true
	hm := m.(*Hello) // accept lets nothing else through
	if hm.Major != VersionMajor {
		end.note(DisconnectVersion, fmt.Errorf("api: %w: client speaks %d.%d", ErrVersion, hm.Major, hm.Minor))
		c.sendQueued(q, id, &Error{Code: flow.CodeNotSupported, Message: fmt.Sprintf(
			"protocol version %d.%d not supported; daemon speaks %d.%d",
			hm.Major, hm.Minor, VersionMajor, VersionMinor)}, nil, 0)
		q.drain(sendTimeout)
		return
	}
	h, err := s.Handler.Open(c, hm)
	if err != nil {
		end.note(DisconnectRefused, err)
		c.sendQueued(q, id, ErrorReply(err), nil, 0)
		q.drain(sendTimeout)
		return
	}
	defer func() {
		_, cause, _ := end.get()
		h.Close(cause)
	}()
	if err := c.sendQueued(q, id, &HelloReply{Major: VersionMajor, Minor: VersionMinor, Name: s.Name}, nil, sendTimeout); err != nil {
		end.noteSend(err)
		return
	}
	idle := orDefault(s.IdleTimeout, DefaultIdleTimeout)
	// An app attached, or a capture started: no idle timeout (a Detach
	// ends the app's hold, not a capture's).
	attached, capturing := false, false
	for {
		if idle > 0 && !attached && !capturing {
			c.SetReadDeadline(time.Now().Add(idle))
		} else {
			c.SetReadDeadline(time.Time{})
		}
		id, m, fds, err := c.RecvID()
		if err != nil {
			s.refuse(c, q, &end, id, err, ErrIdle, DisconnectIdle)
			return
		}
		var (
			reply   Message
			rfds    []int
			herr    error
			release func() // a Show's slot, given back once its reply left
		)
		if m.Type() == TypeShow {
			release, herr = s.showGate().acquire(ctx, c.Peer().UID, 2*sendTimeout, q.stopped)
			if herr != nil {
				s.showRefused.Add(1)
			}
		}
		if herr == nil {
			reply, rfds, herr = h.Handle(ctx, Request{ID: id, Msg: m, FDs: fds, Peer: c.Peer(), Conn: c})
		} else {
			closeFDs(fds)
		}
		if herr != nil {
			reply, rfds = ErrorReplyFor(herr, hm.Minor), nil
		} else if reply == nil {
			reply = &OK{}
		}
		switch reply.Type() {
		case TypeAttachReply:
			attached = true
		case TypeCaptureReply:
			capturing = true
		case TypeOK:
			if m.Type() == TypeDetach {
				attached = false
			}
		}
		if err := c.sendQueuedRelease(q, id, reply, rfds, 2*sendTimeout, release); err != nil {
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrBadFDs) {
				// The handler built a reply that does not encode.
				s.logf("api: pid %d: %v reply: %v", c.Peer().PID, reply.Type(), err)
				err = c.sendQueued(q, id, &Error{Code: flow.CodeUnknown, Message: truncateUTF8(err.Error(), MaxMessageLen)}, nil, sendTimeout)
			}
			if err != nil {
				end.noteSend(err)
				return
			}
		}
	}
}

// refuse records why a receive failed and answers a malformed or
// unexpected message with an Error reply (CodeInvalidValue, with the
// request id when it could be read), flushed for at most SendTimeout,
// before the connection is closed. A timeout is reported as timeoutErr.
func (s *Server) refuse(c *Conn, q *outQueue, end *connEnd, id uint32, err error, timeoutErr error, timeoutReason DisconnectReason) {
	switch {
	case errors.Is(err, io.EOF):
		end.note(DisconnectHangup, err)
	case errors.Is(err, ErrClosed):
		end.note(DisconnectClosed, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		end.note(timeoutReason, fmt.Errorf("%w: %w", timeoutErr, err))
	case errors.Is(err, ErrNotAccepted):
		end.note(DisconnectNotAccepted, err)
	case errors.Is(err, ErrMalformed):
		end.note(DisconnectMalformed, err)
	default:
		end.note(DisconnectError, err)
	}
	if errors.Is(err, ErrMalformed) {
		if c.sendQueued(q, id, &Error{Code: flow.CodeInvalidValue, Message: truncateUTF8(err.Error(), MaxMessageLen)}, nil, 0) == nil {
			q.drain(orDefault(s.SendTimeout, DefaultSendTimeout))
		}
	}
}
