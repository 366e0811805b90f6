package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
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
// from any goroutine.
type ConnHandler interface {
	// Handle returns the reply to req and the descriptors it carries (the
	// handler keeps ownership of them), or an error, which the client
	// gets as an Error reply. A nil reply and nil error send OK. ctx ends
	// when the server stops; the connection is then closed.
	Handle(ctx context.Context, req Request) (reply Message, fds []int, err error)
	// Close is called once when the connection ends, with the reason
	// (io.EOF when the client hung up).
	Close(err error)
}

// Server serves control connections. A connection that sends a malformed,
// truncated, oversized or unknown message gets an Error reply and is
// closed; the others carry on.
type Server struct {
	Handler Handler
	// Name is sent in HelloReply.
	Name string
	// HelloTimeout bounds the wait for a new connection's Hello; 0 means
	// 5 s.
	HelloTimeout time.Duration
	// Logf, if set, receives one line per connection error.
	Logf func(format string, args ...any)
}

// Serve accepts connections on l and serves each on its own goroutine until
// ctx ends or l fails. It then closes l and every connection, waits for
// their goroutines, and returns nil after ctx ended or the accept error.
func (s *Server) Serve(ctx context.Context, l *Listener) error {
	var (
		mu    sync.Mutex
		conns = make(map[*Conn]struct{}) // guarded by mu
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(ctx, func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer func() {
		cancel() // runs the AfterFunc above, which closes every connection
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
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// ServeConn serves one connection until it ends, then closes it. It
// returns when the peer hangs up, sends something malformed, or c is
// closed.
func (s *Server) ServeConn(ctx context.Context, c *Conn) {
	defer c.Close()
	timeout := s.HelloTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	id, m, fds, err := c.RecvID()
	if err != nil {
		s.refuse(c, id, err)
		return
	}
	c.SetReadDeadline(time.Time{})
	hello, ok := m.(*Hello)
	if !ok {
		closeFDs(fds)
		s.refuse(c, id, malformed(ErrMalformed, "first message is %v, not Hello", m.Type()))
		return
	}
	if hello.Major != VersionMajor {
		c.SendID(id, &Error{Code: flow.CodeNotSupported, Message: fmt.Sprintf(
			"protocol version %d.%d not supported; daemon speaks %d.%d",
			hello.Major, hello.Minor, VersionMajor, VersionMinor)})
		s.logf("api: pid %d: refused protocol version %d.%d", c.Peer().PID, hello.Major, hello.Minor)
		return
	}
	h, err := s.Handler.Open(c, hello)
	if err != nil {
		c.SendID(id, ErrorReply(err))
		return
	}
	var cause error
	defer func() { h.Close(cause) }()
	if err := c.SendID(id, &HelloReply{Major: VersionMajor, Minor: VersionMinor, Name: s.Name}); err != nil {
		cause = err
		return
	}
	for {
		id, m, fds, err := c.RecvID()
		if err != nil {
			s.refuse(c, id, err)
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				err = fmt.Errorf("api: server: %w", ErrClosed)
			}
			cause = err
			return
		}
		if id == 0 || !m.Type().IsRequest() || m.Type() == TypeHello {
			closeFDs(fds)
			err := malformed(ErrMalformed, "%v with request id %d is not a request here", m.Type(), id)
			s.refuse(c, id, err)
			cause = err
			return
		}
		reply, rfds, herr := h.Handle(ctx, Request{ID: id, Msg: m, FDs: fds})
		if herr != nil {
			reply, rfds = ErrorReply(herr), nil
		} else if reply == nil {
			reply = &OK{}
		}
		if err := c.SendID(id, reply, rfds...); err != nil {
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrBadFDs) {
				// The handler built a reply that does not encode.
				s.logf("api: pid %d: %v reply: %v", c.Peer().PID, reply.Type(), err)
				err = c.SendID(id, &Error{Code: flow.CodeUnknown, Message: truncateUTF8(err.Error(), MaxMessageLen)})
			}
			if err != nil {
				cause = err
				return
			}
		}
	}
}

// refuse answers a receive error: a malformed message gets an Error reply
// (CodeInvalidValue, with the request id when it could be read) before the
// connection is closed; a hang-up or close gets nothing.
func (s *Server) refuse(c *Conn, id uint32, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, ErrClosed) {
		return
	}
	s.logf("api: pid %d: closing connection: %v", c.Peer().PID, err)
	if errors.Is(err, ErrMalformed) {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.SendID(id, &Error{Code: flow.CodeInvalidValue, Message: truncateUTF8(err.Error(), MaxMessageLen)})
	}
}
