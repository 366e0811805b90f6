// Package api is the control protocol between xsessiond and its apps (and
// its CLI): a versioned binary protocol over a unix SOCK_SEQPACKET socket,
// with file descriptors (segments, the epoll set that wakes the app) passed by
// SCM_RIGHTS. Data never travels on this socket.
//
// # Records
//
// Every message is one seqpacket record: a 16-byte little-endian Header
// (magic "XS", version, flags, type, reserved, request id, body length) and
// a body of at most MaxBodySize bytes, MaxRecordSize in all. Bodies are
// encoded by hand, field by field in declaration order: integers
// little-endian, strings as a uint16 length and UTF-8 bytes, byte blobs
// as a uint32 length, lists as a uint16 count, booleans as 0 or 1,
// addresses as a family byte (0 none, 4, 6) and 16 bytes, endpoints as
// transport, address, port, ifindex and FIB. Every string and list has a
// limit (MaxNameLen, MaxURILen, …) checked on both sides. Decoding is
// strict: an accepted record re-encodes to the same bytes, and anything
// else — short header, bad magic, other version, unknown flags or type,
// length mismatch, a field running past the body or bytes after it, an
// over-long field — is an error wrapping ErrMalformed.
//
// A record carries at most MaxFDs descriptors, and exactly as many as its
// message says (Message.FDs). Descriptors are received with
// MSG_CMSG_CLOEXEC; those of a record that is refused, truncated
// (MSG_TRUNC, MSG_CTRUNC) or carries the wrong number are closed.
// A ShowReply longer than one record is sent as several records with
// FlagMore set on all but the last and reassembled by Conn.Recv, up to
// MaxReassembled bytes (Conn.SetMaxReassembled lowers it).
//
// # Conversation
//
// The client opens with Hello (its major.minor version). The daemon
// answers HelloReply with its own version, or an Error with
// flow.CodeNotSupported for another major version and closes the
// connection. Then the client sends requests, each with a fresh non-zero
// request id, and the daemon answers each with a reply of the same id:
// the reply type listed below, OK, or Error{Code, Message}. Error codes
// are flow.Code values, so the app side gets the sessions sentinel
// back (RemoteError unwraps to it; errors.Is works). The daemon also
// sends notices with request id 0 at any time. A malformed record gets an
// Error reply (CodeInvalidValue) and the connection is closed; other
// connections are not affected.
//
// # Message types
//
// The type numbers are part of the protocol; they are never reused or
// renumbered. Version 2.5 adds the error codes flow.CodeHostSocket,
// flow.CodeProhibited and flow.CodeBlackhole; a client that says an older
// version gets the codes it knew for those errors (ErrorReplyFor).
// Version 2.4 adds a page to Show (After, Limit: the sessions
// or listeners above a handle, a number at a time; Client.ShowAll pages
// through a table). Version 2.3 adds Membership (a UDP listener joins and
// leaves multicast groups). Version 2.2: an app marks the wire TCP
// sessions its Accept takes (fifo/ABI.md, "Taking an accepted session"),
// and the daemon holds the listeners of an app that says 2.2 or more to
// their backlog from the start.
// Version 2.1 (2.2 without that promise; 2.0 also without Abort). Version 1 passed the event queue's eventfd
// itself, which the daemon writes, in AttachReply, and the peer app's in
// a cut-through session; holding that open file, an app could clear
// O_NONBLOCK on it and fill its counter, and the daemon's next write
// blocked. Version 2 passes an epoll set watching the daemon's eventfd,
// and each end of a cut-through session an eventfd of its own in the
// other app's set (fifo.EventQueue). Version 2.0 has every message of 1.3
// (RuleAddReply, PathMTU, SleepFlags):
//
//	type  message         direction       reply          descriptors
//	1     Hello           app → daemon    HelloReply     –
//	2     HelloReply      daemon → app    –              –
//	3     Error           daemon → app    –              –
//	4     OK              daemon → app    –              –
//	16    Attach          app → daemon    AttachReply    –
//	17    AttachReply     daemon → app    –              one per segment, the epoll set, one kick eventfd per worker
//	18    Detach          app → daemon    OK             –
//	32    Bind            app → daemon    BindReply      –
//	33    BindReply       daemon → app    –              –
//	34    Unbind          app → daemon    OK             –
//	35    Connect         app → daemon    ConnectReply   –
//	36    ConnectReply    daemon → app    –              the segment and an eventfd waking the peer, if cut-through
//	37    Disconnect      app → daemon    OK             – (a wire TCP session may close through its tx fifo instead: fifo.RequestClose)
//	38    CloseWrite      app → daemon    OK             –
//	39    SetKeepalive    app → daemon    OK             –
//	40    Abort           app → daemon    OK             –
//	48    SegmentAdded    daemon → app    (notice)       one per segment
//	49    SegmentRemoved  daemon → app    (notice)       –
//	50    Accepted        daemon → app    (notice)       the segment and an eventfd waking the peer, if cut-through
//	51    Shutdown        daemon → app    (notice)       –
//	64    Show            ctl → daemon    ShowReply      –
//	65    ShowReply       daemon → ctl    –              – (may use FlagMore)
//	66    NsAdd           ctl → daemon    OK             –
//	67    NsDel           ctl → daemon    OK             –
//	68    RuleAdd         ctl → daemon    RuleAddReply   –
//	69    RuleDel         ctl → daemon    OK             –
//	70    NsSetSecret     ctl → daemon    OK             –
//	71    StatsClear      ctl → daemon    OK             –
//	72    Capture         ctl → daemon    CaptureReply   –
//	73    CaptureReply    daemon → ctl    –              the read end of a pipe carrying the capture stream
//	74    RuleAddReply    daemon → ctl    –              –
//	75    PathMTU         app → daemon    PathMTUReply   –
//	76    PathMTUReply    daemon → app    –              –
//	77    SleepFlags      app → daemon    SleepFlagsReply –
//	78    SleepFlagsReply daemon → app    –              the workers' sleep flags page (a sealed memfd)
//	79    Membership      app → daemon    OK             –
//
// # Hostile clients
//
// A Server trusts no client. Every record's header is vetted before its
// body is decoded or anything is reassembled: before Hello only Hello is
// accepted, after it only request types other than Hello, never with
// request id 0 and never with FlagMore (no request spans records), so a
// client can make the server hold no more than one record of its own.
// Replies and notices go through a bounded per-connection queue and the
// connection's writer goroutine: a send never waits for a client, a
// client that leaves a record unread for SendTimeout, takes more than
// twice that to read the records of one long ShowReply, or overflows its
// queue is dropped (notices that others' requests cause go with
// Conn.TrySend, which refuses them past half of the queue instead, so that
// no client can make the server drop another), and closing a connection or
// stopping the server never
// waits for a client. Connections past MaxConns are closed as soon as they
// are accepted (RootReserve of them stay for uid 0), a connection must say
// Hello within HelloTimeout, and one that attaches nothing and sends
// nothing for IdleTimeout is closed. Show requests, whose documents may be
// as long as MaxReassembled, are served MaxShows at once across all
// connections, one per uid other than 0 and one kept for uid 0, from
// before the handler builds the document until its last record left, so
// that many connections asking, or asking without reading, cannot make
// the server hold a document each. Drops are counted by reason
// (Server.Stats) and logged with the peer's pid and uid; Request.Peer
// gives the handler the peer's credentials to authorize each request, and
// AttemptLimiter rate-limits failed secrets per uid.
//
// # Objects
//
// Listen gives a Listener (close it: it removes the socket file and its
// lock); Dial gives a Conn (close it). Server serves a Listener with a
// Handler; Client wraps a Conn for Call. A Conn is safe for one receiving
// goroutine and any number of sending goroutines; Client.Call is safe for
// concurrent use. Descriptors received belong to the receiver; Send never
// closes the descriptors it is given.
package api
