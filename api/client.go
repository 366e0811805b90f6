package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// ClientOptions tune NewClient.
type ClientOptions struct {
	// Name is sent in Hello, for the daemon's logs.
	Name string
	// Notify receives the unsolicited messages (request id 0: SegmentAdded,
	// SegmentRemoved, Accepted) and owns their descriptors. It runs on the
	// client's receiving goroutine: it must not block for long and must not
	// call Call. Nil drops notices and closes their descriptors.
	Notify func(m Message, fds []int)
	// KeepTruncated has a reply or notice whose descriptors did not all
	// arrive (MSG_CTRUNC: this process is at its descriptor limit) come
	// without any, for the caller to handle (the count of descriptors
	// its message says is then not there), instead of failing the
	// connection.
	KeepTruncated bool
}

// Client is the request side of a connection: it has said Hello, and runs
// one goroutine that receives replies and routes them to the Call waiting
// for them by request id. Call is safe for concurrent use. Close it to
// close the connection and stop the goroutine.
type Client struct {
	conn   *Conn
	server HelloReply
	notify func(Message, []int)
	nextID atomic.Uint32
	done   chan struct{} // closed when the receiving goroutine ends

	mu      sync.Mutex                      // guards pending, late and err
	pending map[uint32]chan result          // calls waiting for their reply
	late    map[uint32]func(Message, []int) // calls given up, whose reply goes to a handler (CallLate)
	err     error                           // why the receiving goroutine ended; nil while it runs
}

type result struct {
	msg Message
	fds []int
	err error
}

var resultChans = sync.Pool{New: func() any { return make(chan result, 1) }}

// DialClient dials path and says Hello; see Dial and NewClient.
func DialClient(ctx context.Context, path string, opts ClientOptions) (*Client, error) {
	c, err := Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	cl, err := NewClient(ctx, c, opts)
	if err != nil {
		c.Close()
		return nil, err
	}
	return cl, nil
}

// NewClient says Hello on c and starts receiving. The Client owns c from
// then on. A daemon of another major version answers with an error that
// wraps ErrVersion.
func NewClient(ctx context.Context, c *Conn, opts ClientOptions) (*Client, error) {
	c.keepTruncated = opts.KeepTruncated // before any receive
	hello := &Hello{Major: VersionMajor, Minor: VersionMinor, Name: opts.Name}
	if err := c.SendContext(ctx, 1, hello); err != nil {
		return nil, fmt.Errorf("api: hello: %w", err)
	}
	reply, err := recvContext(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("api: hello: %w", err)
	}
	switch r := reply.(type) {
	case *HelloReply:
		if r.Major != VersionMajor {
			return nil, fmt.Errorf("api: hello: %w: daemon speaks %d.%d, we speak %d.%d",
				ErrVersion, r.Major, r.Minor, VersionMajor, VersionMinor)
		}
		cl := &Client{
			conn:    c,
			server:  *r,
			notify:  opts.Notify,
			done:    make(chan struct{}),
			pending: make(map[uint32]chan result),
		}
		cl.nextID.Store(1)
		go cl.receive()
		return cl, nil
	case *Error:
		if r.Code == flow.CodeNotSupported {
			return nil, fmt.Errorf("api: hello: %w: %w", ErrVersion, r.Err())
		}
		return nil, fmt.Errorf("api: hello: %w", r.Err())
	default:
		return nil, fmt.Errorf("api: hello: %w: got %v", ErrUnexpectedReply, reply.Type())
	}
}

// recvContext receives the reply to the Hello, bounded by ctx.
func recvContext(ctx context.Context, c *Conn) (Message, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
		c.SetReadDeadline(time.Time{})
	}()
	for {
		id, m, fds, err := c.RecvID()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
				// The read deadline (ctx's) fired before ctx's own timer
				// marked ctx done: the same timeout.
				return nil, context.DeadlineExceeded
			}
			return nil, err
		}
		if id == 1 {
			closeFDs(fds)
			return m, nil
		}
		if id != 0 {
			closeFDs(fds)
			return nil, malformed(ErrMalformed, "reply to request %d before Hello", id)
		}
		closeFDs(fds) // a notice before the Hello reply: not expected, dropped
	}
}

// Server returns the daemon's HelloReply.
func (cl *Client) Server() HelloReply { return cl.server }

// Conn returns the client's connection, for sending notices or reading its
// peer credentials. Do not receive on it.
func (cl *Client) Conn() *Conn { return cl.conn }

// Done is closed when the client stops receiving (Close, or the
// connection failed); Err then says why.
func (cl *Client) Done() <-chan struct{} { return cl.done }

// Err returns why the client stopped, or nil while it runs.
func (cl *Client) Err() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.err
}

// Close closes the connection and waits for the receiving goroutine to end.
// Pending calls fail with ErrClosed.
func (cl *Client) Close() error {
	err := cl.conn.Close()
	<-cl.done
	return err
}

// Call sends req with the descriptors it carries and waits for the reply.
// An Error reply is returned as a *RemoteError (wrapping the sessions
// sentinel of its code). The reply's descriptors belong to the caller. If
// ctx ends first, Call returns ctx's error and a late reply is dropped
// (its descriptors closed).
func (cl *Client) Call(ctx context.Context, req Message, fds ...int) (Message, []int, error) {
	return cl.CallLate(ctx, req, nil, fds...)
}

// CallLate is Call, but a reply to a request that was sent and then given
// up (ctx ended first) goes to late, with its descriptors, when late is
// not nil: a request that makes something in the daemon (a session) can
// then undo it. late runs on the goroutine that receives every reply and
// notice (or on the caller's, when the reply was already being handed over
// as ctx ended): it must not block (nor make a call and wait for it). It is not
// called when the connection fails first: the daemon then frees what the
// app had.
func (cl *Client) CallLate(ctx context.Context, req Message, late func(Message, []int), fds ...int) (Message, []int, error) {
	id := cl.newID()
	ch := resultChans.Get().(chan result)
	cl.mu.Lock()
	if cl.err != nil {
		err := cl.err
		cl.mu.Unlock()
		resultChans.Put(ch)
		return nil, nil, err
	}
	cl.pending[id] = ch
	cl.mu.Unlock()

	if err := cl.conn.SendContext(ctx, id, req, fds...); err != nil {
		cl.abandon(id, ch, nil)
		return nil, nil, err
	}
	var r result
	select {
	case r = <-ch:
		resultChans.Put(ch)
	case <-ctx.Done():
		cl.abandon(id, ch, late)
		return nil, nil, fmt.Errorf("api: %v: %w", req.Type(), ctx.Err())
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if e, ok := r.msg.(*Error); ok {
		return nil, nil, e.Err()
	}
	return r.msg, r.fds, nil
}

// abandon forgets call id. If its reply is already on its way, it goes to
// late (or is drained and its descriptors closed); a reply still to come
// goes to late when it comes (receive), or is dropped.
func (cl *Client) abandon(id uint32, ch chan result, late func(Message, []int)) {
	cl.mu.Lock()
	_, waiting := cl.pending[id]
	delete(cl.pending, id)
	if waiting && late != nil && cl.err == nil {
		if cl.late == nil {
			cl.late = map[uint32]func(Message, []int){}
		}
		cl.late[id] = late
	}
	cl.mu.Unlock()
	if !waiting {
		r := <-ch
		switch {
		case r.err != nil:
		case late != nil:
			late(r.msg, r.fds)
		default:
			closeFDs(r.fds)
		}
	}
	resultChans.Put(ch)
}

func (cl *Client) newID() uint32 {
	for {
		id := cl.nextID.Add(1)
		if id == 0 {
			continue
		}
		cl.mu.Lock()
		_, busy := cl.pending[id]
		cl.mu.Unlock()
		if !busy {
			return id
		}
	}
}

// receive routes replies to calls and notices to Notify until the
// connection fails.
func (cl *Client) receive() {
	defer close(cl.done)
	for {
		id, m, fds, err := cl.conn.RecvID()
		if err != nil {
			cl.fail(err)
			return
		}
		if id == 0 {
			if e, ok := m.(*Error); ok {
				// The daemon refused something it could not tie to a
				// request and is closing the connection.
				cl.fail(fmt.Errorf("api: daemon closed the connection: %w", e.Err()))
				cl.conn.Close()
				return
			}
			if cl.notify != nil {
				cl.notify(m, fds)
			} else {
				closeFDs(fds)
			}
			continue
		}
		cl.mu.Lock()
		ch, ok := cl.pending[id]
		delete(cl.pending, id)
		late := cl.late[id]
		delete(cl.late, id)
		cl.mu.Unlock()
		if !ok {
			// A reply to an abandoned call.
			if late != nil {
				late(m, fds)
			} else {
				closeFDs(fds)
			}
			continue
		}
		ch <- result{msg: m, fds: fds}
	}
}

// fail records why receiving stopped and fails every pending call.
func (cl *Client) fail(err error) {
	if errors.Is(err, ErrClosed) {
		err = fmt.Errorf("api: client: %w", ErrClosed)
	}
	cl.mu.Lock()
	cl.err = err
	cl.late = nil
	for id, ch := range cl.pending {
		delete(cl.pending, id)
		ch <- result{err: err}
	}
	cl.mu.Unlock()
}

// Do is Call for a request whose successful reply has type R. Any other
// reply type is an error wrapping ErrUnexpectedReply, and its descriptors
// are closed.
func Do[R Message](ctx context.Context, cl *Client, req Message, fds ...int) (R, []int, error) {
	return DoLate[R](ctx, cl, req, nil, fds...)
}

// DoLate is Do with CallLate's late.
func DoLate[R Message](ctx context.Context, cl *Client, req Message, late func(Message, []int), fds ...int) (R, []int, error) {
	var zero R
	m, rfds, err := cl.CallLate(ctx, req, late, fds...)
	if err != nil {
		return zero, nil, err
	}
	r, ok := m.(R)
	if !ok {
		closeFDs(rfds)
		return zero, nil, fmt.Errorf("api: %v: %w: got %v", req.Type(), ErrUnexpectedReply, m.Type())
	}
	return r, rfds, nil
}

// NotSocket says what path is when it is there but is not a socket, as one
// phrase that names it: "PATH is a directory, not a socket" or "PATH is
// not a socket but a file". It returns "" for a socket, and for a path it
// cannot look at (none there, no permission): Dial's error says those.
// Callers add what to do, naming their own setting for the socket.
func NotSocket(path string) string {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return ""
	case fi.IsDir():
		return path + " is a directory, not a socket"
	case fi.Mode()&fs.ModeSocket == 0:
		return path + " is not a socket but a file"
	}
	return ""
}
