package api

import (
	"fmt"
	"math"
	"net/netip"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// Type is a message type number. The numbers are part of the protocol (see
// the table in the package documentation): never reuse or renumber one.
type Type uint16

// Message types.
const (
	TypeHello      Type = 1
	TypeHelloReply Type = 2
	TypeError      Type = 3
	TypeOK         Type = 4

	TypeAttach      Type = 16
	TypeAttachReply Type = 17
	TypeDetach      Type = 18

	TypeBind         Type = 32
	TypeBindReply    Type = 33
	TypeUnbind       Type = 34
	TypeConnect      Type = 35
	TypeConnectReply Type = 36
	TypeDisconnect   Type = 37
	TypeCloseWrite   Type = 38
	TypeSetKeepalive Type = 39
	// TypeAbort is 40 (protocol 2.1).
	TypeAbort Type = 40

	TypeSegmentAdded   Type = 48
	TypeSegmentRemoved Type = 49
	TypeAccepted       Type = 50
	TypeShutdown       Type = 51

	TypeShow      Type = 64
	TypeShowReply Type = 65
	TypeNsAdd     Type = 66
	TypeNsDel     Type = 67
	TypeRuleAdd   Type = 68
	TypeRuleDel   Type = 69
	// TypeNsSetSecret is 70.
	TypeNsSetSecret Type = 70
	// TypeStatsClear, TypeCapture and TypeCaptureReply are 71, 72 and 73.
	TypeStatsClear   Type = 71
	TypeCapture      Type = 72
	TypeCaptureReply Type = 73
	// TypeRuleAddReply is 74 (protocol 1.1).
	TypeRuleAddReply Type = 74
	// TypePathMTU and TypePathMTUReply are 75 and 76 (protocol 1.2).
	TypePathMTU      Type = 75
	TypePathMTUReply Type = 76
	// TypeSleepFlags and TypeSleepFlagsReply are 77 and 78 (protocol 1.3).
	TypeSleepFlags      Type = 77
	TypeSleepFlagsReply Type = 78
	// TypeMembership is 79 (protocol 2.3).
	TypeMembership Type = 79
)

var typeNames = map[Type]string{
	TypeHello: "Hello", TypeHelloReply: "HelloReply", TypeError: "Error", TypeOK: "OK",
	TypeAttach: "Attach", TypeAttachReply: "AttachReply", TypeDetach: "Detach",
	TypeBind: "Bind", TypeBindReply: "BindReply", TypeUnbind: "Unbind",
	TypeConnect: "Connect", TypeConnectReply: "ConnectReply", TypeDisconnect: "Disconnect",
	TypeCloseWrite: "CloseWrite", TypeSetKeepalive: "SetKeepalive", TypeAbort: "Abort",
	TypeSegmentAdded: "SegmentAdded", TypeSegmentRemoved: "SegmentRemoved", TypeAccepted: "Accepted",
	TypeShutdown: "Shutdown",
	TypeShow:     "Show", TypeShowReply: "ShowReply", TypeNsAdd: "NsAdd", TypeNsDel: "NsDel",
	TypeRuleAdd: "RuleAdd", TypeRuleDel: "RuleDel", TypeNsSetSecret: "NsSetSecret",
	TypeStatsClear: "StatsClear", TypeCapture: "Capture", TypeCaptureReply: "CaptureReply",
	TypeRuleAddReply: "RuleAddReply", TypePathMTU: "PathMTU", TypePathMTUReply: "PathMTUReply",
	TypeSleepFlags: "SleepFlags", TypeSleepFlagsReply: "SleepFlagsReply", TypeMembership: "Membership",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint16(t))
}

// IsRequest reports whether t is sent by a client and answered by the
// daemon (as opposed to a reply or a notice).
func (t Type) IsRequest() bool {
	switch t {
	case TypeHello, TypeAttach, TypeDetach, TypeBind, TypeUnbind, TypeConnect, TypeDisconnect, TypeCloseWrite, TypeSetKeepalive, TypeAbort,
		TypeShow, TypeNsAdd, TypeNsDel, TypeRuleAdd, TypeRuleDel, TypeNsSetSecret, TypeStatsClear, TypeCapture,
		TypePathMTU, TypeSleepFlags, TypeMembership:
		return true
	}
	return false
}

// Message is one protocol message. The set is closed: only the types of
// this package implement it.
type Message interface {
	// Type returns the message's type number.
	Type() Type
	// FDs returns the number of file descriptors the message carries.
	FDs() int

	encode(e *encoder)
	decode(d *decoder)
}

// newMessage returns a zero message of type t, or nil for an unknown type.
func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeHelloReply:
		return new(HelloReply)
	case TypeError:
		return new(Error)
	case TypeOK:
		return new(OK)
	case TypeAttach:
		return new(Attach)
	case TypeAttachReply:
		return new(AttachReply)
	case TypeDetach:
		return new(Detach)
	case TypeBind:
		return new(Bind)
	case TypeBindReply:
		return new(BindReply)
	case TypeUnbind:
		return new(Unbind)
	case TypeConnect:
		return new(Connect)
	case TypeConnectReply:
		return new(ConnectReply)
	case TypeDisconnect:
		return new(Disconnect)
	case TypeCloseWrite:
		return new(CloseWrite)
	case TypeSetKeepalive:
		return new(SetKeepalive)
	case TypeAbort:
		return new(Abort)
	case TypeSegmentAdded:
		return new(SegmentAdded)
	case TypeSegmentRemoved:
		return new(SegmentRemoved)
	case TypeAccepted:
		return new(Accepted)
	case TypeShutdown:
		return new(Shutdown)
	case TypeShow:
		return new(Show)
	case TypeShowReply:
		return new(ShowReply)
	case TypeNsAdd:
		return new(NsAdd)
	case TypeNsDel:
		return new(NsDel)
	case TypeRuleAdd:
		return new(RuleAdd)
	case TypeRuleDel:
		return new(RuleDel)
	case TypeNsSetSecret:
		return new(NsSetSecret)
	case TypeStatsClear:
		return new(StatsClear)
	case TypeCapture:
		return new(Capture)
	case TypeCaptureReply:
		return new(CaptureReply)
	case TypeRuleAddReply:
		return new(RuleAddReply)
	case TypePathMTU:
		return new(PathMTU)
	case TypePathMTUReply:
		return new(PathMTUReply)
	case TypeSleepFlags:
		return new(SleepFlags)
	case TypeSleepFlagsReply:
		return new(SleepFlagsReply)
	case TypeMembership:
		return new(Membership)
	}
	return nil
}

// Hello opens every connection: the client's protocol version and a name
// for logs ("app", "ctl", an app's name).
type Hello struct {
	Major, Minor uint8
	Name         string // at most MaxNameLen bytes
}

// HelloReply accepts a Hello with the daemon's version. A Hello of another
// major version is answered by an Error (CodeNotSupported) instead, and the
// connection is closed.
type HelloReply struct {
	Major, Minor uint8
	Name         string // at most MaxNameLen bytes
}

// Error is the reply to any failed request. Code is the sessions code of
// the failure; Message a one-line text for people.
type Error struct {
	Code    flow.Code
	Message string // at most MaxMessageLen bytes
}

// Err returns the error e stands for: a *RemoteError that wraps the
// sessions sentinel of e.Code.
func (e *Error) Err() error { return &RemoteError{Code: e.Code, Message: e.Message} }

// OK is the reply to a request that succeeded and has nothing to say.
type OK struct{}

// Attach attaches the connection's app to a namespace. The reply is an
// AttachReply; the app stays attached until Detach or until the connection
// closes.
type Attach struct {
	Name            string // app name, at most MaxNameLen bytes
	Namespace       string // namespace id ("" is the default), at most MaxNameLen bytes
	Secret          uint64 // the namespace's secret
	Scope           flow.Scope
	Proxy           bool             // every port of the namespace; needs uid 0 or CAP_NET_ADMIN
	ProxyTransports []flow.Transport // at most MaxProxyTransports
	RxFifoSize      uint32
	TxFifoSize      uint32
	SegmentSize     uint64 // size of the first segment
	AddSegmentSize  uint64 // size of segments added later; 0: none added
	MaxFifoMemory   uint64 // cap on the app's fifo memory; 0: no cap beyond the daemon's
}

// Segment names a shared memory segment: its index (stable for the app's
// lifetime) and size. Messages that list segments carry one descriptor per
// segment, in list order.
type Segment struct {
	Index uint32
	Size  uint64
}

// QueueRef locates the app's event queue inside a segment.
type QueueRef struct {
	Segment  uint32 // segment index
	Offset   uint64 // byte offset in the segment
	Capacity uint32 // entries
}

// FifoRef locates one fifo inside a segment: the segment's index, the
// byte offset of the fifo's header in it, and the fifo's data size. On the
// wire the offset takes 64 bits; one over 32 bits is malformed.
type FifoRef = fifo.FifoRef

// AttachReply carries len(Segments)+1+Workers descriptors: one per segment
// in list order, then the epoll set that wakes the app (its event queue's:
// an edge per signal, nothing to read), then one kick eventfd per
// datapath worker in worker order. An app that queued data in a tx fifo
// owned by worker w, and whose SetEvent returned true, writes 1 to kick
// eventfd w (only while worker w's sleep flag is set, if it asked for the
// page: SleepFlags).
type AttachReply struct {
	AppIndex   uint32
	Segments   []Segment // at most MaxSegmentFDs
	EventQueue QueueRef
	Workers    uint8 // kick eventfds carried, at most MaxKickFDs
}

// Detach detaches the app; the reply is OK.
type Detach struct{}

// Bind starts a listener. URI, when not empty, names the endpoint
// ("udp://0.0.0.0/9000"); otherwise Endpoint does.
type Bind struct {
	URI      string // at most MaxURILen bytes
	Endpoint flow.Endpoint
}

// BindReply answers Bind with the listener's handle and its endpoint as
// bound. A listener that receives datagrams from the wire (a global UDP
// listener) has a fifo pair in the app's segments: the app reads datagrams
// from Rx and writes the datagrams to send to Tx, whose consumer is worker
// Worker. Rx.Size is zero when the listener has no pair (it only accepts
// sessions).
type BindReply struct {
	Handle flow.Handle
	Local  flow.Endpoint
	Worker uint32
	Rx, Tx FifoRef
}

// Unbind stops the listener Handle; the reply is OK.
type Unbind struct {
	Handle flow.Handle
}

// Connect opens a session. URI, when not empty, names the destination;
// otherwise Endpoint does. Opaque comes back in the Connected or
// ConnectFailed event of a session that is not complete when the reply is
// sent (Arg32 of the event).
type Connect struct {
	URI      string // at most MaxURILen bytes
	Endpoint flow.Endpoint
	Opaque   uint32
}

// SessionInfo describes a new session: its handle, the worker that owns
// its fifos' datapath ends, its fifos, its ends, and, for a cut-through
// session, the segment shared with the peer app. A message carrying a
// cut-through session carries two descriptors: the segment's, then an
// eventfd in the peer app's epoll set, made for this end of this session,
// which the app writes 1 to after queueing data in its tx fifo when
// SetEvent returned true (the peer does the same the other way round). Rx.Size is zero for a session whose fifos are
// not ready yet (a connect still in progress: its Connected event names
// them).
type SessionInfo struct {
	Handle     flow.Handle
	Worker     uint32
	Rx, Tx     FifoRef
	Local      flow.Endpoint
	Remote     flow.Endpoint
	CutThrough bool
	Segment    Segment // the cut-through segment, when CutThrough
}

// ConnectReply answers Connect. It carries two descriptors when CutThrough
// is set (see SessionInfo), none otherwise.
type ConnectReply struct {
	SessionInfo
}

// Disconnect closes the session Handle; the reply is OK.
type Disconnect struct {
	Handle flow.Handle
}

// CloseWrite closes the sending half of stream session Handle (a FIN once
// what the app queued is sent); the reply is OK.
type CloseWrite struct {
	Handle flow.Handle
}

// Abort closes stream session Handle with a reset, as close(2) of a TCP
// socket whose SO_LINGER is on with a zero time: what the app queued and
// did not send is dropped, the peer gets an RST on the wire (a cut-through
// peer reads what was queued for it, then ECONNRESET). The reply is OK.
type Abort struct {
	Handle flow.Handle
}

// SegmentAdded tells an app (unsolicited, request id 0) of new segments;
// it carries one descriptor per segment in list order.
type SegmentAdded struct {
	Segments []Segment // 1 to MaxFDs
}

// SegmentRemoved tells an app (unsolicited) that segments are gone.
type SegmentRemoved struct {
	Segments []uint32 // segment indices, 1 to MaxSegmentIDs
}

// Accepted tells a listening app (unsolicited) of a session accepted on
// Listener whose fifos live in a segment it has not seen: a cut-through
// session, whose segment descriptor it carries when CutThrough is set.
type Accepted struct {
	Listener flow.Handle
	SessionInfo
}

// Shutdown tells an app or the CLI (unsolicited) that the daemon is going
// away: it closes the connection right after. The app's sessions and
// listeners are gone with it.
type Shutdown struct {
	Reason string // at most MaxReasonLen bytes
}

// ShowWhat selects what Show reports.
type ShowWhat uint8

// Show selectors.
const (
	ShowApps ShowWhat = iota + 1
	ShowSessions
	ShowListeners
	ShowNamespaces
	ShowRules
	ShowStats
)

var showNames = [...]string{
	ShowApps: "apps", ShowSessions: "sessions", ShowListeners: "listeners",
	ShowNamespaces: "namespaces", ShowRules: "rules", ShowStats: "stats",
}

func (w ShowWhat) String() string {
	if int(w) < len(showNames) && showNames[w] != "" {
		return showNames[w]
	}
	return fmt.Sprintf("show(%d)", uint8(w))
}

// ParseShowWhat parses the names String returns.
func ParseShowWhat(s string) (ShowWhat, error) {
	for i, n := range showNames {
		if n != "" && n == s {
			return ShowWhat(i), nil
		}
	}
	return 0, fmt.Errorf("show %q: %w", s, flow.ErrInvalidValue)
}

// Show asks the daemon for a JSON report; the reply is a ShowReply.
//
// Sessions and listeners may be asked for a page at a time (version 2.4):
// the rows whose handle is above After, in handle order, at least Limit of
// them when there are that many, and more only to end the page with every
// row of its last handle (a TCP connection gVisor still closes keeps the
// handle a new session may hold). A page of fewer than Limit rows is the
// last. Limit 0 asks for every row above After. Client.ShowAll pages
// through a table of any size. The other reports are one document and
// take no page.
type Show struct {
	What  ShowWhat
	After uint64
	Limit uint32
}

// Paged says whether m asks for a page (version 2.4) rather than the whole
// report.
func (m *Show) Paged() bool { return m.After != 0 || m.Limit != 0 }

// ShowReply carries a JSON document. One longer than a record holds is sent
// as several records with FlagMore, reassembled by Conn.Recv up to
// MaxReassembled bytes.
type ShowReply struct {
	JSON []byte
}

// NsAdd adds a namespace; the reply is OK.
type NsAdd struct {
	ID     string // at most MaxNameLen bytes
	Secret uint64
	Iface  string // at most MaxIfaceLen bytes
	Netns  string // Linux netns name, "" for the daemon's own; at most MaxNetnsLen bytes
}

// NsDel deletes a namespace; the reply is OK.
type NsDel struct {
	ID string
}

// NsSetSecret replaces a namespace's secret; the reply is OK. Later
// attaches need the new secret; apps attached already keep working.
type NsSetSecret struct {
	ID     string // at most MaxNameLen bytes
	Secret uint64
}

// RuleAction is what a rule does with a matching connection or packet.
type RuleAction uint8

// Rule actions.
const (
	ActionDrop RuleAction = iota + 1
	ActionAllow
	ActionForward // to the app AppIndex
)

func (a RuleAction) String() string {
	switch a {
	case ActionDrop:
		return "drop"
	case ActionAllow:
		return "allow"
	case ActionForward:
		return "forward"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Rule is a session rule: a masked 5-tuple and what to do on a match. A
// zero port or an invalid (zero) prefix matches anything.
type Rule struct {
	Namespace  string // at most MaxNameLen bytes
	Transport  flow.Transport
	Local      netip.Prefix
	LocalPort  uint16
	Remote     netip.Prefix
	RemotePort uint16
	Action     RuleAction
	AppIndex   uint32 // the target of ActionForward
	Scope      flow.Scope
	Tag        string // at most MaxNameLen bytes
}

// RuleAdd adds a rule; the reply is a RuleAddReply with the new rule's id
// to a client that said Hello with minor version 1 or more, OK to older
// ones.
type RuleAdd struct {
	Rule Rule
}

// RuleAddReply answers RuleAdd: the id the daemon gave the rule (the id
// `show rules` lists and RuleDel takes). Protocol 1.1.
type RuleAddReply struct {
	ID uint32
}

// RuleDel deletes the rule with ID when ID is not zero (the id `show
// rules` lists), else the rules tagged Rule.Tag when the tag is not empty,
// else the rule whose match fields equal Rule's; the reply is OK.
type RuleDel struct {
	Rule Rule
	ID   uint32
}

// Type numbers.

func (*Hello) Type() Type          { return TypeHello }
func (*HelloReply) Type() Type     { return TypeHelloReply }
func (*Error) Type() Type          { return TypeError }
func (*OK) Type() Type             { return TypeOK }
func (*Attach) Type() Type         { return TypeAttach }
func (*AttachReply) Type() Type    { return TypeAttachReply }
func (*Detach) Type() Type         { return TypeDetach }
func (*Bind) Type() Type           { return TypeBind }
func (*BindReply) Type() Type      { return TypeBindReply }
func (*Unbind) Type() Type         { return TypeUnbind }
func (*Connect) Type() Type        { return TypeConnect }
func (*ConnectReply) Type() Type   { return TypeConnectReply }
func (*Disconnect) Type() Type     { return TypeDisconnect }
func (*CloseWrite) Type() Type     { return TypeCloseWrite }
func (*Abort) Type() Type          { return TypeAbort }
func (*SegmentAdded) Type() Type   { return TypeSegmentAdded }
func (*SegmentRemoved) Type() Type { return TypeSegmentRemoved }
func (*Accepted) Type() Type       { return TypeAccepted }
func (*Shutdown) Type() Type       { return TypeShutdown }
func (*Show) Type() Type           { return TypeShow }
func (*ShowReply) Type() Type      { return TypeShowReply }
func (*NsAdd) Type() Type          { return TypeNsAdd }
func (*NsDel) Type() Type          { return TypeNsDel }
func (*NsSetSecret) Type() Type    { return TypeNsSetSecret }
func (*RuleAdd) Type() Type        { return TypeRuleAdd }
func (*RuleDel) Type() Type        { return TypeRuleDel }

// Descriptor counts.

func (*Hello) FDs() int          { return 0 }
func (*HelloReply) FDs() int     { return 0 }
func (*Error) FDs() int          { return 0 }
func (*OK) FDs() int             { return 0 }
func (*Attach) FDs() int         { return 0 }
func (m *AttachReply) FDs() int  { return len(m.Segments) + 1 + int(m.Workers) }
func (*Detach) FDs() int         { return 0 }
func (*Bind) FDs() int           { return 0 }
func (*BindReply) FDs() int      { return 0 }
func (*Unbind) FDs() int         { return 0 }
func (*Connect) FDs() int        { return 0 }
func (m *ConnectReply) FDs() int { return m.SessionInfo.fds() }
func (*Disconnect) FDs() int     { return 0 }
func (*CloseWrite) FDs() int     { return 0 }
func (*Abort) FDs() int          { return 0 }
func (m *SegmentAdded) FDs() int { return len(m.Segments) }
func (*SegmentRemoved) FDs() int { return 0 }
func (m *Accepted) FDs() int     { return m.SessionInfo.fds() }
func (*Shutdown) FDs() int       { return 0 }
func (*Show) FDs() int           { return 0 }
func (*ShowReply) FDs() int      { return 0 }
func (*NsAdd) FDs() int          { return 0 }
func (*NsDel) FDs() int          { return 0 }
func (*NsSetSecret) FDs() int    { return 0 }
func (*RuleAdd) FDs() int        { return 0 }
func (*RuleDel) FDs() int        { return 0 }

func (s *SessionInfo) fds() int {
	if s.CutThrough {
		return 2
	}
	return 0
}

// Bodies. Each encode writes the fields in declaration order; each decode
// reads them back in the same order.

func (m *Hello) encode(e *encoder) {
	e.u8(m.Major)
	e.u8(m.Minor)
	e.str(m.Name, MaxNameLen, "hello name")
}
func (m *Hello) decode(d *decoder) {
	m.Major = d.u8()
	m.Minor = d.u8()
	m.Name = d.str(MaxNameLen, "hello name")
}

func (m *HelloReply) encode(e *encoder) {
	e.u8(m.Major)
	e.u8(m.Minor)
	e.str(m.Name, MaxNameLen, "hello name")
}

func (m *HelloReply) decode(d *decoder) {
	m.Major = d.u8()
	m.Minor = d.u8()
	m.Name = d.str(MaxNameLen, "hello name")
}

func (m *Error) encode(e *encoder) {
	e.u16(uint16(m.Code))
	e.str(m.Message, MaxMessageLen, "error message")
}
func (m *Error) decode(d *decoder) {
	m.Code = flow.Code(d.u16())
	m.Message = d.str(MaxMessageLen, "error message")
}

func (*OK) encode(*encoder)     {}
func (*OK) decode(*decoder)     {}
func (*Detach) encode(*encoder) {}
func (*Detach) decode(*decoder) {}

func (m *Attach) encode(e *encoder) {
	e.str(m.Name, MaxNameLen, "app name")
	e.str(m.Namespace, MaxNameLen, "namespace")
	e.u64(m.Secret)
	e.u8(uint8(m.Scope))
	e.bool(m.Proxy)
	if e.listLen(len(m.ProxyTransports), 0, MaxProxyTransports, "proxy transports") {
		for _, t := range m.ProxyTransports {
			e.u8(uint8(t))
		}
	}
	e.u32(m.RxFifoSize)
	e.u32(m.TxFifoSize)
	e.u64(m.SegmentSize)
	e.u64(m.AddSegmentSize)
	e.u64(m.MaxFifoMemory)
}

func (m *Attach) decode(d *decoder) {
	m.Name = d.str(MaxNameLen, "app name")
	m.Namespace = d.str(MaxNameLen, "namespace")
	m.Secret = d.u64()
	m.Scope = flow.Scope(d.u8())
	m.Proxy = d.bool()
	if n := d.listLen(0, MaxProxyTransports, "proxy transports"); n > 0 {
		m.ProxyTransports = make([]flow.Transport, n)
		for i := range m.ProxyTransports {
			m.ProxyTransports[i] = flow.Transport(d.u8())
		}
	}
	m.RxFifoSize = d.u32()
	m.TxFifoSize = d.u32()
	m.SegmentSize = d.u64()
	m.AddSegmentSize = d.u64()
	m.MaxFifoMemory = d.u64()
}

func (s *Segment) encode(e *encoder) { e.u32(s.Index); e.u64(s.Size) }
func (s *Segment) decode(d *decoder) { s.Index = d.u32(); s.Size = d.u64() }

func encodeSegments(e *encoder, segs []Segment, min, max int, field string) {
	if e.listLen(len(segs), min, max, field) {
		for i := range segs {
			segs[i].encode(e)
		}
	}
}

func decodeSegments(d *decoder, min, max int, field string) []Segment {
	n := d.listLen(min, max, field)
	if n == 0 {
		return nil
	}
	segs := make([]Segment, n)
	for i := range segs {
		segs[i].decode(d)
	}
	return segs
}

func (m *AttachReply) encode(e *encoder) {
	e.u32(m.AppIndex)
	encodeSegments(e, m.Segments, 0, MaxSegmentFDs, "attach segments")
	e.u32(m.EventQueue.Segment)
	e.u64(m.EventQueue.Offset)
	e.u32(m.EventQueue.Capacity)
	if m.Workers > MaxKickFDs {
		e.fail(malformed(ErrFieldTooLong, "attach workers: %d, limit %d", m.Workers, MaxKickFDs))
		return
	}
	e.u8(m.Workers)
}

func (m *AttachReply) decode(d *decoder) {
	m.AppIndex = d.u32()
	m.Segments = decodeSegments(d, 0, MaxSegmentFDs, "attach segments")
	m.EventQueue.Segment = d.u32()
	m.EventQueue.Offset = d.u64()
	m.EventQueue.Capacity = d.u32()
	m.Workers = d.u8()
	if m.Workers > MaxKickFDs {
		d.fail(malformed(ErrFieldTooLong, "attach workers: %d, limit %d", m.Workers, MaxKickFDs))
	}
}

func (m *Bind) encode(e *encoder) { e.str(m.URI, MaxURILen, "bind uri"); e.endpoint(m.Endpoint) }
func (m *Bind) decode(d *decoder) { m.URI = d.str(MaxURILen, "bind uri"); m.Endpoint = d.endpoint() }

func (m *BindReply) encode(e *encoder) {
	e.u64(uint64(m.Handle))
	e.endpoint(m.Local)
	e.u32(m.Worker)
	encodeFifoRef(e, &m.Rx)
	encodeFifoRef(e, &m.Tx)
}

func (m *BindReply) decode(d *decoder) {
	m.Handle = flow.Handle(d.u64())
	m.Local = d.endpoint()
	m.Worker = d.u32()
	decodeFifoRef(d, &m.Rx)
	decodeFifoRef(d, &m.Tx)
}

func (m *Unbind) encode(e *encoder) { e.u64(uint64(m.Handle)) }
func (m *Unbind) decode(d *decoder) { m.Handle = flow.Handle(d.u64()) }

func (m *Connect) encode(e *encoder) {
	e.str(m.URI, MaxURILen, "connect uri")
	e.endpoint(m.Endpoint)
	e.u32(m.Opaque)
}

func (m *Connect) decode(d *decoder) {
	m.URI = d.str(MaxURILen, "connect uri")
	m.Endpoint = d.endpoint()
	m.Opaque = d.u32()
}

func encodeFifoRef(e *encoder, f *FifoRef) { e.u32(f.Segment); e.u64(uint64(f.Offset)); e.u32(f.Size) }

func decodeFifoRef(d *decoder, f *FifoRef) {
	f.Segment = d.u32()
	off := d.u64()
	f.Size = d.u32()
	if off > math.MaxUint32 {
		d.fail(malformed(ErrFieldTooLong, "fifo offset %d over 32 bits", off))
		return
	}
	f.Offset = uint32(off)
}

func (s *SessionInfo) encode(e *encoder) {
	e.u64(uint64(s.Handle))
	e.u32(s.Worker)
	encodeFifoRef(e, &s.Rx)
	encodeFifoRef(e, &s.Tx)
	e.endpoint(s.Local)
	e.endpoint(s.Remote)
	e.bool(s.CutThrough)
	if s.CutThrough {
		s.Segment.encode(e)
	} else if s.Segment != (Segment{}) {
		e.fail(malformed(ErrMalformed, "segment set on a session that is not cut-through"))
	}
}

func (s *SessionInfo) decode(d *decoder) {
	s.Handle = flow.Handle(d.u64())
	s.Worker = d.u32()
	decodeFifoRef(d, &s.Rx)
	decodeFifoRef(d, &s.Tx)
	s.Local = d.endpoint()
	s.Remote = d.endpoint()
	s.CutThrough = d.bool()
	if s.CutThrough {
		s.Segment.decode(d)
	}
}

func (m *ConnectReply) encode(e *encoder) { m.SessionInfo.encode(e) }
func (m *ConnectReply) decode(d *decoder) { m.SessionInfo.decode(d) }

func (m *Disconnect) encode(e *encoder) { e.u64(uint64(m.Handle)) }
func (m *Disconnect) decode(d *decoder) { m.Handle = flow.Handle(d.u64()) }
func (m *CloseWrite) encode(e *encoder) { e.u64(uint64(m.Handle)) }
func (m *CloseWrite) decode(d *decoder) { m.Handle = flow.Handle(d.u64()) }
func (m *Abort) encode(e *encoder)      { e.u64(uint64(m.Handle)) }
func (m *Abort) decode(d *decoder)      { m.Handle = flow.Handle(d.u64()) }

func (m *SegmentAdded) encode(e *encoder) {
	encodeSegments(e, m.Segments, 1, MaxFDs, "added segments")
}

func (m *SegmentAdded) decode(d *decoder) {
	m.Segments = decodeSegments(d, 1, MaxFDs, "added segments")
}

func (m *SegmentRemoved) encode(e *encoder) {
	if e.listLen(len(m.Segments), 1, MaxSegmentIDs, "removed segments") {
		for _, s := range m.Segments {
			e.u32(s)
		}
	}
}

func (m *SegmentRemoved) decode(d *decoder) {
	n := d.listLen(1, MaxSegmentIDs, "removed segments")
	if n == 0 {
		return
	}
	m.Segments = make([]uint32, n)
	for i := range m.Segments {
		m.Segments[i] = d.u32()
	}
}

func (m *Accepted) encode(e *encoder) { e.u64(uint64(m.Listener)); m.SessionInfo.encode(e) }
func (m *Accepted) decode(d *decoder) { m.Listener = flow.Handle(d.u64()); m.SessionInfo.decode(d) }

func (m *Shutdown) encode(e *encoder) { e.str(m.Reason, MaxReasonLen, "shutdown reason") }
func (m *Shutdown) decode(d *decoder) { m.Reason = d.str(MaxReasonLen, "shutdown reason") }

// A Show's page (After, Limit) follows What only when asked for, so a
// request for a whole report is the record of version 2.3 and before.
func (m *Show) encode(e *encoder) {
	e.u8(uint8(m.What))
	if m.Paged() {
		e.u64(m.After)
		e.u32(m.Limit)
	}
}

func (m *Show) decode(d *decoder) {
	m.What = ShowWhat(d.u8())
	if d.err != nil || d.off == len(d.b) {
		return
	}
	m.After, m.Limit = d.u64(), d.u32()
	if d.err == nil && !m.Paged() {
		d.fail(errShowPage) // re-encodes without the page: not strict
	}
}

func (m *ShowReply) encode(e *encoder) { e.blob(m.JSON, maxShowChunk, "show json") }
func (m *ShowReply) decode(d *decoder) { m.JSON = d.blob(maxShowChunk, "show json") }

func (m *NsAdd) encode(e *encoder) {
	e.str(m.ID, MaxNameLen, "namespace id")
	e.u64(m.Secret)
	e.str(m.Iface, MaxIfaceLen, "interface")
	e.str(m.Netns, MaxNetnsLen, "netns")
}

func (m *NsAdd) decode(d *decoder) {
	m.ID = d.str(MaxNameLen, "namespace id")
	m.Secret = d.u64()
	m.Iface = d.str(MaxIfaceLen, "interface")
	m.Netns = d.str(MaxNetnsLen, "netns")
}

func (m *NsDel) encode(e *encoder) { e.str(m.ID, MaxNameLen, "namespace id") }
func (m *NsDel) decode(d *decoder) { m.ID = d.str(MaxNameLen, "namespace id") }

func (m *NsSetSecret) encode(e *encoder) {
	e.str(m.ID, MaxNameLen, "namespace id")
	e.u64(m.Secret)
}

func (m *NsSetSecret) decode(d *decoder) {
	m.ID = d.str(MaxNameLen, "namespace id")
	m.Secret = d.u64()
}

func (r *Rule) encode(e *encoder) {
	e.str(r.Namespace, MaxNameLen, "rule namespace")
	e.u8(uint8(r.Transport))
	e.prefix(r.Local, "rule local prefix")
	e.u16(r.LocalPort)
	e.prefix(r.Remote, "rule remote prefix")
	e.u16(r.RemotePort)
	e.u8(uint8(r.Action))
	e.u32(r.AppIndex)
	e.u8(uint8(r.Scope))
	e.str(r.Tag, MaxNameLen, "rule tag")
}

func (r *Rule) decode(d *decoder) {
	r.Namespace = d.str(MaxNameLen, "rule namespace")
	r.Transport = flow.Transport(d.u8())
	r.Local = d.prefix()
	r.LocalPort = d.u16()
	r.Remote = d.prefix()
	r.RemotePort = d.u16()
	r.Action = RuleAction(d.u8())
	r.AppIndex = d.u32()
	r.Scope = flow.Scope(d.u8())
	r.Tag = d.str(MaxNameLen, "rule tag")
}

func (m *RuleAdd) encode(e *encoder) { m.Rule.encode(e) }
func (m *RuleAdd) decode(d *decoder) { m.Rule.decode(d) }
func (m *RuleDel) encode(e *encoder) { m.Rule.encode(e); e.u32(m.ID) }
func (m *RuleDel) decode(d *decoder) { m.Rule.decode(d); m.ID = d.u32() }

// StatsClear sets the counters the daemon reports to ctl (show, top) back
// to zero; the reply is OK. The metrics keep counting.
type StatsClear struct{}

// MaxCaptureReasonLen bounds Capture.Reason.
const MaxCaptureReasonLen = 64

// Capture asks the daemon to capture the frames its datapath receives and
// sends; the reply is a CaptureReply whose descriptor is the read end of a
// pipe on which the daemon writes the capture stream (a compact record per
// frame with its queue, direction, handle, app and drop reason; see
// package daemon, which also turns it into pcapng) until Count frames,
// Duration, the reader closes the pipe or the connection closes. Zero
// fields do not filter or bound; the filters that are set must all match.
type Capture struct {
	Listener flow.Handle // frames of this listener
	Session  flow.Handle // frames of this session
	App      uint32      // frames of this app's listeners and sessions
	Reason   string      // dropped frames of this reason ("any": every drop); at most MaxCaptureReasonLen bytes
	Count    uint32      // stop after this many frames
	Duration uint32      // stop after this many milliseconds
	Snaplen  uint32      // bytes kept of each frame; 0: all
}

// CaptureReply carries the read end of the capture's pipe.
type CaptureReply struct{}

func (*StatsClear) Type() Type   { return TypeStatsClear }
func (*Capture) Type() Type      { return TypeCapture }
func (*CaptureReply) Type() Type { return TypeCaptureReply }

func (*StatsClear) FDs() int   { return 0 }
func (*Capture) FDs() int      { return 0 }
func (*CaptureReply) FDs() int { return 1 }

func (*StatsClear) encode(*encoder) {}
func (*StatsClear) decode(*decoder) {}

func (m *Capture) encode(e *encoder) {
	e.u64(uint64(m.Listener))
	e.u64(uint64(m.Session))
	e.u32(m.App)
	e.str(m.Reason, MaxCaptureReasonLen, "capture reason")
	e.u32(m.Count)
	e.u32(m.Duration)
	e.u32(m.Snaplen)
}

func (m *Capture) decode(d *decoder) {
	m.Listener = flow.Handle(d.u64())
	m.Session = flow.Handle(d.u64())
	m.App = d.u32()
	m.Reason = d.str(MaxCaptureReasonLen, "capture reason")
	m.Count = d.u32()
	m.Duration = d.u32()
	m.Snaplen = d.u32()
}

func (*CaptureReply) encode(*encoder) {}
func (*CaptureReply) decode(*decoder) {}

func (*RuleAddReply) Type() Type          { return TypeRuleAddReply }
func (*RuleAddReply) FDs() int            { return 0 }
func (m *RuleAddReply) encode(e *encoder) { e.u32(m.ID) }
func (m *RuleAddReply) decode(d *decoder) { m.ID = d.u32() }
