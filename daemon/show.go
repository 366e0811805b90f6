package daemon

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// The documents of `ctl show … --json` (docs/cli.md has the schema). One
// key style, snake_case; handles are strings "0x…" (a JSON number above
// 2^53 loses precision in jq and JavaScript); durations are seconds as
// numbers; the default namespace is named DefaultNamespace.

// DefaultNamespace is how tables, JSON and metrics name the default
// namespace (id "" in the session layer).
const DefaultNamespace = "default"

// NamespaceName returns the name of namespace id in reports.
func NamespaceName(id string) string {
	if id == "" {
		return DefaultNamespace
	}
	return id
}

// NamespaceID is the inverse of NamespaceName: the daemon takes the
// default namespace by its listed name wherever a namespace is given (an
// attach, a rule, a filter).
func NamespaceID(name string) string {
	if name == DefaultNamespace {
		return ""
	}
	return name
}

// Handle is a session or listener handle in JSON: a string "0x…".
type Handle flow.Handle

func (h Handle) String() string { return "0x" + strconv.FormatUint(uint64(h), 16) }

// MarshalJSON writes h as "0x…".
func (h Handle) MarshalJSON() ([]byte, error) { return []byte(`"` + h.String() + `"`), nil }

// UnmarshalJSON reads "0x…".
func (h *Handle) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("handle: %w", err)
	}
	if !strings.HasPrefix(s, "0x") {
		return fmt.Errorf("handle %q: want 0x and hex digits: %w", s, flow.ErrInvalidValue)
	}
	v, err := strconv.ParseUint(s[2:], 16, 64)
	if err != nil {
		return fmt.Errorf("handle %q: %w", s, err)
	}
	*h = Handle(v)
	return nil
}

// AppView is an attached app as `ctl show apps` lists it: the session
// layer's view plus the peer credentials of its connection.
type AppView struct {
	ID        uint32 `json:"id"`
	Client    uint64 `json:"client"` // the control connection's number
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     string `json:"scope"`
	Proxy     bool   `json:"proxy"`
	Listeners int    `json:"listeners"`
	Sessions  int    `json:"sessions"`
	// Ended: TCP sessions that were reset (by the peer, or by the daemon
	// for a corrupt fifo) or timed out, which the app has not closed yet;
	// their fifos stay allocated until it does.
	Ended      int      `json:"ended_sessions"`
	Segments   []string `json:"segments"`
	RxFifoSize uint32   `json:"rx_fifo_size"`
	TxFifoSize uint32   `json:"tx_fifo_size"`
	// EventsWaiting and EventsLost: events the app's full event queue
	// had no room for, waiting in the daemon, and lost past the bound
	// (since the last clear stats).
	EventsWaiting int    `json:"events_waiting"`
	EventsLost    uint64 `json:"events_lost"`
	PID           int32  `json:"pid"`
	UID           uint32 `json:"uid"`
	GID           uint32 `json:"gid"`
	Since         string `json:"since"` // RFC 3339, UTC
	// FifoUsed and FifoSize sum the app's fifos; the fifos of a
	// cut-through session are counted once, under the app that reads them.
	FifoUsed uint64 `json:"fifo_used_bytes"`
	FifoSize uint64 `json:"fifo_size_bytes"`
}

// SessionView is a session as `ctl show sessions` lists it, with its
// fifos' fill and, for sessions the datapath serves, its packets, bytes
// and drops each way since the last clear stats.
type SessionView struct {
	Handle     Handle `json:"handle"`
	App        uint32 `json:"app"`
	Namespace  string `json:"namespace"`
	State      string `json:"state"` // "established", "half-open", "cut-through" or "lingering"
	Transport  string `json:"transport"`
	Local      string `json:"local"`
	Remote     string `json:"remote"`
	FIB        uint32 `json:"fib"`
	Worker     uint32 `json:"worker"`
	Listener   Handle `json:"listener"` // "0x0": none
	Peer       Handle `json:"peer"`     // the other end of a cut-through session; "0x0": none
	RxFifoUsed uint64 `json:"rx_fifo_used_bytes"`
	RxFifoSize uint64 `json:"rx_fifo_size_bytes"`
	TxFifoUsed uint64 `json:"tx_fifo_used_bytes"`
	TxFifoSize uint64 `json:"tx_fifo_size_bytes"`
	// TCPState is gVisor's state of a TCP session on the wire
	// (ESTABLISHED, CLOSE-WAIT, TIME-WAIT, ...); "" for other sessions.
	TCPState string `json:"tcp_state"`
	// Retransmits are the segments gVisor retransmitted on a TCP
	// session on the wire (since the last clear stats).
	Retransmits uint64 `json:"retransmits"`
	// TCPRecvQ and TCPSendQ are a TCP session's bytes in gVisor: received
	// and not yet moved into the rx fifo, and not yet sent or
	// acknowledged (ss's Recv-Q and Send-Q); 0 for other sessions.
	TCPRecvQ int `json:"tcp_recv_q_bytes"`
	TCPSendQ int `json:"tcp_send_q_bytes"`
	// TCPRcvBuf is a TCP session's receive buffer in gVisor (bytes), which
	// grows while the app reads fast (ss -m's rb); 0 for other sessions.
	TCPRcvBuf int `json:"tcp_rcv_buf_bytes"`
	// TCPRTT and TCPRTTVar are a TCP session's smoothed round-trip time
	// and its variation in microseconds (0 until data went and was
	// acknowledged), TCPCwnd its congestion window in segments (ss -i's
	// rtt and cwnd); 0 for other sessions.
	TCPRTT    int64  `json:"tcp_rtt_us"`
	TCPRTTVar int64  `json:"tcp_rtt_var_us"`
	TCPCwnd   uint32 `json:"tcp_cwnd"`
	// The counters of a TCP session on the wire are its connection's
	// since it opened or since the last clear stats: segments and payload
	// bytes each way (bytes: into the rx fifo, out of the tx fifo).
	Counters
}

// Counters are a session's or listener's datapath counters.
type Counters struct {
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	Dropped   uint64            `json:"dropped"`
	Drops     map[string]uint64 `json:"drops"` // by reason, not zero only
}

// ListenerView is a listener as `ctl show listeners` lists it. A UDP
// listener's counters are those of the datagrams it received unconnected.
type ListenerView struct {
	Handle     Handle `json:"handle"`
	App        uint32 `json:"app"`
	URI        string `json:"uri"`
	Namespace  string `json:"namespace"`
	Table      string `json:"table"` // "local" or "global"
	FIB        uint32 `json:"fib"`
	Proxy      bool   `json:"proxy"`
	RxFifoUsed uint64 `json:"rx_fifo_used_bytes"`
	RxFifoSize uint64 `json:"rx_fifo_size_bytes"`
	// TCP: a TCP listener on the wire's accept queue and refusals; absent
	// for the others.
	TCP *ListenerTCPView `json:"tcp,omitempty"`
	Counters
}

// ListenerTCPView is a TCP listener's backlog and refusals.
type ListenerTCPView struct {
	Backlog int `json:"backlog"`
	// Untaken: the sessions handed to the app that its Accept has not
	// taken; -1 for an app that does not say what it takes (protocol
	// before 2.2, and none marked yet), whose listener is not held back.
	Untaken int `json:"untaken"`
	// Refused: connections refused since the last clear stats, by reason
	// ("backlog", "limit", "no_memory", "closing"; as
	// xsessiond_tcp_refused_total).
	Refused map[string]uint64 `json:"refused"`
}

// NamespaceView is a namespace as `ctl show namespaces` lists it (never
// its secret).
type NamespaceView struct {
	ID             string `json:"id"`
	IfIndex        int    `json:"ifindex"`
	FIB4           uint32 `json:"fib4"`
	FIB6           uint32 `json:"fib6"`
	Apps           int    `json:"apps"`
	LocalListeners int    `json:"local_listeners"`
}

// RuleView is a rule as `ctl show rules` lists it.
type RuleView struct {
	ID         uint32 `json:"id"`
	Namespace  string `json:"namespace"`
	Proto      string `json:"proto"`
	Local      string `json:"local"`
	LocalPort  uint16 `json:"local_port"`
	Remote     string `json:"remote"`
	RemotePort uint16 `json:"remote_port"`
	Action     string `json:"action"`
	App        uint32 `json:"app"` // the app of a forward rule; 0 otherwise
	Scope      string `json:"scope"`
	Tag        string `json:"tag"`
	Hits       uint64 `json:"hits"` // packets and connects the rule acted on (since the last clear stats)
}

// StatsView is `ctl show stats`: the daemon, its tables' sizes and its
// datapath's counters since the last clear stats.
type StatsView struct {
	Version   string `json:"version"`
	Interface string `json:"interface"`
	Netns     string `json:"netns"` // "" : the daemon's own
	IfIndex   int    `json:"ifindex"`
	// InterfaceState is the interface's state as its namespace's view
	// last saw it: up (and running), down (administratively),
	// no-carrier (up, not running: a peer or cable away), gone (deleted
	// or moved to another netns), or "" without a datapath.
	InterfaceState string  `json:"interface_state"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	ClearedSeconds float64 `json:"cleared_seconds_ago"` // since the last clear stats, or since start
	Apps           int     `json:"apps"`
	Connections    int     `json:"connections"`
	Listeners      int     `json:"listeners"`
	Sessions       int     `json:"sessions"`
	Namespaces     int     `json:"namespaces"`
	Rules          int     `json:"rules"`
	Workers        int     `json:"workers"`
	EngineStats
	Control ControlStats `json:"control"`
}

// ControlStats are the control socket's counters.
type ControlStats struct {
	// Disconnects counts ended connections by reason (api.Server.Stats).
	Disconnects map[string]uint64 `json:"disconnects"`
	// Dropped counts the clients the server dropped for not reading
	// (send_timeout, queue_full) or idling (idle), their apps detached.
	Dropped map[string]uint64 `json:"dropped"`
	// ShowsRefused counts the show requests refused because
	// control.max_shows were being served (api.Server.MaxShows).
	ShowsRefused uint64 `json:"shows_refused"`
}

// ControlStats returns the control socket's counters since the daemon
// started, as the metrics report them (show stats reports them since the
// last clear stats).
func (d *Daemon) ControlStats() ControlStats {
	st := ControlStats{Dropped: map[string]uint64{}}
	if d.srv != nil {
		ss := d.srv.Stats()
		st.Disconnects, st.ShowsRefused = ss.ByReason(), ss.ShowsRefused
	}
	for r, name := range dropNames {
		st.Dropped[name] = d.dropped[r].Load()
	}
	return st
}

// show builds the JSON document of a Show request.
//
// Apps of other users (their pid, uid, names) are shown to admins only
// (Auth.Admin); others see their own.
//
// A request for a page (api.Show.After, Limit) of sessions or listeners
// gets the rows above After in handle order, Limit of them and the rest of
// its last handle's (pageRows); other reports take no page.
func (d *Daemon) show(m *api.Show, peer api.Cred) ([]byte, error) {
	what := m.What
	if m.Paged() && what != api.ShowSessions && what != api.ShowListeners {
		return nil, fmt.Errorf("show %v: one document, it takes no page (sessions and listeners do): %w", what, flow.ErrInvalidValue)
	}
	var v any
	switch what {
	case api.ShowApps:
		apps := d.AppViews()
		if !d.isAdmin(peer) {
			apps = slices.DeleteFunc(apps, func(a AppView) bool { return a.UID != peer.UID })
		}
		v = apps
	case api.ShowSessions:
		v = pageRows(d.sessionViews(m.After, m.Limit), func(r SessionView) Handle { return r.Handle }, m.After, m.Limit)
	case api.ShowListeners:
		v = pageRows(d.ListenerViews(), func(r ListenerView) Handle { return r.Handle }, m.After, m.Limit)
	case api.ShowNamespaces:
		v = d.NamespaceViews()
	case api.ShowRules:
		v = d.RuleViews()
	case api.ShowStats:
		v = d.Stats()
	default:
		return nil, fmt.Errorf("show %d: %w", uint8(what), flow.ErrInvalidValue)
	}
	doc, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(doc) > api.MaxReassembled {
		// More than a client reassembles (api.Conn.Recv): the encoder
		// would refuse it with a bare size error. Say what is too big and
		// what still answers. (--app and --ns filter in the client, on the
		// whole document: they do not make it smaller.)
		rows := 1 // stats: one document
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
			rows = rv.Len()
		}
		return nil, fmt.Errorf("show %v: %d rows make %.1f MB of JSON, more than one reply carries (%d MiB): "+
			"ask for a page at a time (api.Client.ShowAll; ctl does since protocol 2.4); "+
			"ctl show apps gives each app's session count, the metrics' xsessiond_sessions count them by namespace and state: %w",
			what, rows, float64(len(doc))/1e6, api.MaxReassembled>>20, flow.ErrLimit)
	}
	return doc, nil
}

// pageRows returns the rows whose handle is above after, in handle order
// (rows of one handle keep their order: a session's before the TCP
// connection gVisor still closes that had its handle), cut after limit
// rows and the rest of the last one's handle, so that the next page,
// asked for above that handle, misses none; limit 0 keeps them all.
func pageRows[R any](rows []R, handle func(R) Handle, after uint64, limit uint32) []R {
	slices.SortStableFunc(rows, func(a, b R) int { return cmp.Compare(handle(a), handle(b)) })
	i, _ := slices.BinarySearchFunc(rows, Handle(after), func(r R, h Handle) int {
		if handle(r) <= h {
			return -1
		}
		return 1
	})
	rows = rows[i:]
	if limit == 0 || len(rows) <= int(limit) {
		return rows
	}
	end := int(limit)
	for end < len(rows) && handle(rows[end]) == handle(rows[end-1]) {
		end++
	}
	return rows[:end]
}

// AppViews lists the attached apps.
func (d *Daemon) AppViews() []AppView {
	apps := d.layer.Apps()
	fills := d.fifoFill()
	_, cb := d.statsBase()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]AppView, 0, len(apps))
	for _, a := range apps {
		v := AppView{ID: uint32(a.ID), Client: a.Client, Name: a.Name, Namespace: NamespaceName(a.Namespace),
			Scope: a.Scope, Proxy: a.Proxy, Listeners: a.Listeners, Sessions: a.Sessions, Ended: a.Ended, Segments: nonNil(a.Segments),
			RxFifoSize: a.RxFifoSize, TxFifoSize: a.TxFifoSize, EventsWaiting: a.EventsWaiting, EventsLost: a.EventsLost}
		if c := d.clients[a.Client]; c != nil {
			v.PID, v.UID, v.GID = c.cred.PID, c.cred.UID, c.cred.GID
			v.Since = c.since.UTC().Format(time.RFC3339)
		}
		if cb != nil {
			v.EventsLost = sinceBase(v.EventsLost, cb.eventsLost[a.ID])
		}
		f := fills.app(a.ID)
		v.FifoUsed, v.FifoSize = f.rxUsed+f.txUsed, f.rxSize+f.txSize
		out = append(out, v)
	}
	return out
}

func (c *Counters) set(t TargetStats) {
	c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes = t.RxPackets, t.RxBytes, t.TxPackets, t.TxBytes
	c.Drops = nonNilMap(t.Drops)
	c.Dropped = 0
	for _, v := range c.Drops {
		c.Dropped += v
	}
}

// SessionViews lists the sessions with their fifos' fill and counters.
func (d *Daemon) SessionViews() []SessionView { return d.sessionViews(0, 0) }

// sessionViews lists a page of the sessions (pageRows): only the page's
// rows are built, so a table in pages costs about one table. The layer
// gives the page's sessions (SessionsPage); the lingering connections
// shown with them are those of the handles up to the last of a full
// page, so that every row of that handle is in the page.
func (d *Daemon) sessionViews(after uint64, limit uint32) []SessionView {
	ss := d.layer.SessionsPage(sessions.Handle(after), int(limit))
	last := flow.Handle(^uint64(0))
	if limit > 0 && len(ss) == int(limit) {
		last = ss[len(ss)-1].Handle
	}
	nsOf := map[sessions.AppID]string{}
	for _, a := range d.layer.Apps() {
		nsOf[a.ID] = a.Namespace
	}
	fills := d.fifoFillOf(ss)
	b, cb := d.statsBase()
	shown := make(map[flow.Handle]bool, len(ss))
	hs := make([]flow.Handle, len(ss))
	for i, s := range ss {
		shown[s.Handle] = true
		hs[i] = s.Handle
	}
	targets := d.eng.SessionTargets(hs)
	tcpConns := d.tcpConnsSince(d.eng.TCPConnsPage(shown, flow.Handle(after), last))
	// A handle names at most one current connection; a lingering one may
	// have had a handle a new session holds now.
	tcpOf := make(map[flow.Handle]datapath.TCPConnView, len(tcpConns))
	for _, c := range tcpConns {
		if c.Current {
			tcpOf[c.Handle] = c
		}
	}
	// Connections whose session ended and that gVisor still closes: the
	// lingering ones no current session shows (a current one's session
	// is in the page when its handle is).
	lingering := slices.DeleteFunc(slices.Clone(tcpConns), func(c datapath.TCPConnView) bool {
		return !c.Lingering || (c.Current && shown[c.Handle]) || uint64(c.Handle) <= after || c.Handle > last
	})
	out := make([]SessionView, 0, len(ss)+len(lingering))
	for _, s := range ss {
		v := SessionView{Handle: Handle(s.Handle), App: uint32(s.App), Namespace: NamespaceName(nsOf[s.App]), State: s.State,
			Transport: s.Transport, Local: s.Local, Remote: s.Remote, FIB: uint32(s.FIB), Worker: s.Worker,
			Listener: Handle(s.Listener), Peer: Handle(s.Peer)}
		f := fills[s.App][s.Handle]
		v.RxFifoUsed, v.RxFifoSize, v.TxFifoUsed, v.TxFifoSize = f.rxUsed, f.rxSize, f.txUsed, f.txSize
		v.Counters.set(targetSince(targets[s.Handle], b, cb, s.Handle, targetKey{s.App, s.Local + " " + s.Remote}))
		if c, ok := tcpOf[s.Handle]; ok {
			v.setTCP(c)
			delete(tcpOf, s.Handle) // shown with its session
		}
		out = append(out, v)
	}
	for _, c := range lingering {
		v := SessionView{Handle: Handle(c.Handle), App: uint32(c.App), Namespace: NamespaceName(c.Namespace), State: "lingering",
			Transport: flow.TransportTCP.String(), Local: c.Local.String(), Remote: c.Remote.String(), Worker: c.Handle.Worker()}
		v.Counters.set(TargetStats{})
		v.setTCP(c)
		out = append(out, v)
	}
	return out
}

// setTCP fills in a TCP connection's state and counters.
func (v *SessionView) setTCP(c datapath.TCPConnView) {
	v.TCPState, v.Retransmits = c.State, c.Retransmits
	v.TCPRecvQ, v.TCPSendQ, v.TCPRcvBuf = c.RecvQ, c.SendQ, c.RcvBuf
	v.TCPRTT, v.TCPRTTVar, v.TCPCwnd = c.RTT.Microseconds(), c.RTTVar.Microseconds(), c.Cwnd
	v.RxPackets, v.RxBytes, v.TxPackets, v.TxBytes = c.SegmentsReceived, c.RxBytes, c.SegmentsSent, c.TxBytes
}

// ListenerViews lists the listeners.
func (d *Daemon) ListenerViews() []ListenerView {
	ls := d.layer.Listeners()
	fills := d.fifoFill()
	st := d.engineStats()
	tcp := d.eng.TCPListeners()
	b, cb := d.statsBase()
	out := make([]ListenerView, 0, len(ls))
	for _, l := range ls {
		v := ListenerView{Handle: Handle(l.Handle), App: uint32(l.App), URI: l.URI, Namespace: NamespaceName(l.Namespace),
			Table: l.Table, FIB: uint32(l.FIB), Proxy: l.Proxy}
		if t, ok := tcp[l.Handle]; ok {
			refused := t.Refused
			if cb != nil && cb.targets[l.Handle] == (targetKey{l.App, l.URI}) {
				refused = subCounts(refused, cb.refused[l.Handle])
			}
			v.TCP = &ListenerTCPView{Backlog: t.Backlog, Untaken: t.Untaken, Refused: nonNilMap(refused)}
		}
		f := fills[l.App][l.Handle]
		v.RxFifoUsed, v.RxFifoSize = f.rxUsed, f.rxSize
		v.Counters.set(targetSince(st.targets[l.Handle], b, cb, l.Handle, targetKey{l.App, l.URI}))
		out = append(out, v)
	}
	return out
}

// NamespaceViews lists the namespaces.
func (d *Daemon) NamespaceViews() []NamespaceView {
	ns := d.layer.Namespaces()
	out := make([]NamespaceView, 0, len(ns))
	for _, n := range ns {
		out = append(out, NamespaceView{ID: NamespaceName(n.ID), IfIndex: n.IfIndex, FIB4: uint32(n.FIB4), FIB6: uint32(n.FIB6),
			Apps: n.Apps, LocalListeners: n.LocalListeners})
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func nonNilMap(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return m
}

// RuleViews lists the rules.
func (d *Daemon) RuleViews() []RuleView {
	rules := d.layer.Rules()
	_, cb := d.statsBase()
	out := make([]RuleView, 0, len(rules))
	for _, r := range rules {
		if cb != nil {
			r.Hits = sinceBase(r.Hits, cb.ruleHits[r.ID])
		}
		out = append(out, RuleView{
			ID: r.ID, Namespace: NamespaceName(r.Namespace), Proto: r.Transport.String(),
			Local: prefixString(r.Local), LocalPort: r.LocalPort,
			Remote: prefixString(r.Remote), RemotePort: r.RemotePort,
			Action: r.Action.String(), App: uint32(r.App), Scope: r.Scope.String(), Tag: r.Tag, Hits: r.Hits,
		})
	}
	return out
}

func prefixString(p interface {
	IsValid() bool
	String() string
}) string {
	if !p.IsValid() {
		return "any"
	}
	return p.String()
}

// Stats returns what `ctl show stats` shows, once started.
func (d *Daemon) Stats() StatsView {
	d.mu.Lock()
	conns := len(d.clients)
	d.mu.Unlock()
	d.statsMu.Lock()
	cleared := d.cleared
	d.statsMu.Unlock()
	if cleared.IsZero() {
		cleared = d.start
	}
	return StatsView{
		Version: d.cfg.Version, Interface: d.interfaceName(), Netns: d.cfg.Datapath.NetnsName, IfIndex: d.iface.Index,
		InterfaceState: d.interfaceState(),
		UptimeSeconds:  seconds(time.Since(d.start)),
		ClearedSeconds: seconds(time.Since(cleared)),
		Apps:           len(d.layer.Apps()), Connections: conns, Listeners: len(d.layer.Listeners()),
		Sessions: len(d.layer.Sessions()), Namespaces: len(d.layer.Namespaces()), Rules: len(d.layer.Rules()),
		Workers: d.eng.Workers(), EngineStats: d.engineStats(), Control: d.controlStats(),
	}
}

// seconds is a duration in seconds, to the millisecond.
func seconds(t time.Duration) float64 { return float64(t.Milliseconds()) / 1000 }

// ClearStats sets the counters ctl show and ctl top print back to zero:
// they count from now on. It keeps their values now as a base that the
// views subtract; the gauges (fill, table sizes, connections by state) are
// left as they are, and so are the metrics, which read the counters
// themselves (Prometheus counters only grow).
func (d *Daemon) ClearStats() {
	s := d.eng.Stats()
	cb := &clearBase{
		ruleHits:   map[uint32]uint64{},
		eventsLost: map[sessions.AppID]uint64{},
		conns:      map[tcpConnKey]tcpConnCounts{},
		targets:    map[flow.Handle]targetKey{},
		refused:    map[flow.Handle]map[string]uint64{},
		control:    d.ControlStats(),
	}
	for _, r := range d.layer.Rules() {
		cb.ruleHits[r.ID] = r.Hits
	}
	for _, a := range d.layer.Apps() {
		cb.eventsLost[a.ID] = a.EventsLost
	}
	for _, c := range d.eng.TCPConns() {
		cb.conns[connKeyOf(c)] = connCountsOf(c)
	}
	for _, x := range d.layer.Sessions() {
		cb.targets[x.Handle] = targetKey{x.App, x.Local + " " + x.Remote}
	}
	tcp := d.eng.TCPListeners()
	for _, l := range d.layer.Listeners() {
		cb.targets[l.Handle] = targetKey{l.App, l.URI}
		if t, ok := tcp[l.Handle]; ok {
			cb.refused[l.Handle] = t.Refused
		}
	}
	d.statsMu.Lock()
	d.base = &s
	d.cleared = time.Now()
	d.clrBase = cb
	d.statsMu.Unlock()
}

// clearBase is what ClearStats keeps beside the datapath's counters
// (Daemon.base): the counters of the rules, the apps, the TCP connections
// and listeners and the control socket at the last clear. It is not
// changed once set.
type clearBase struct {
	ruleHits   map[uint32]uint64                 // by rule id (ids are not reused)
	eventsLost map[sessions.AppID]uint64         // by app (ids are not reused)
	conns      map[tcpConnKey]tcpConnCounts      // TCP connections' counters
	refused    map[flow.Handle]map[string]uint64 // TCP listeners' refusals by reason (named by targets)
	control    ControlStats
	// targets name the sessions and listeners whose counters
	// Daemon.base holds, by handle (which the layer reuses).
	targets map[flow.Handle]targetKey
}

// tcpConnKey names a TCP connection across its handles (the half-open
// one, then the session's) and after its session ended (lingering).
type tcpConnKey struct {
	app           sessions.AppID
	local, remote netip.AddrPort
}

func connKeyOf(c datapath.TCPConnView) tcpConnKey {
	return tcpConnKey{c.App, c.Local, c.Remote}
}

// tcpConnCounts are the counters of a TCP connection that show sessions
// reports.
type tcpConnCounts struct {
	segsRx, segsTx, rxBytes, txBytes, retransmits uint64
}

func connCountsOf(c datapath.TCPConnView) tcpConnCounts {
	return tcpConnCounts{c.SegmentsReceived, c.SegmentsSent, c.RxBytes, c.TxBytes, c.Retransmits}
}

// targetKey names a session (its app and addresses) or a listener (its
// app and URI) across the reuse of its handle.
type targetKey struct {
	app  sessions.AppID
	name string
}

// targetSince returns t, the datapath's counters of the session or
// listener h named key, since the last ClearStats (b and cb, nil: none):
// less their base if h named the same then, else from its start.
func targetSince(t TargetStats, b *EngineStats, cb *clearBase, h flow.Handle, key targetKey) TargetStats {
	if b == nil || cb == nil || cb.targets[h] != key {
		return t
	}
	if bt, ok := b.targets[h]; ok {
		return t.sub(bt)
	}
	return t
}

// statsBase returns the bases of the last ClearStats; nil, nil: never
// cleared.
func (d *Daemon) statsBase() (*EngineStats, *clearBase) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	b := d.base
	if b == nil {
		return nil, nil
	}
	return b, d.clrBase
}

// sinceBase is counter v less its base; a counter below its base (another
// object's, one that started again) counts from zero.
func sinceBase(v, base uint64) uint64 {
	if v < base {
		return v
	}
	return v - base
}

// subCounts returns counters by name less their base (sinceBase), every
// name of m kept.
func subCounts(m, base map[string]uint64) map[string]uint64 {
	if m == nil {
		return nil
	}
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = sinceBase(v, base[k])
	}
	return out
}

// tcpConnsSince gives conns, the datapath's TCP connections, their
// counters since the last ClearStats (a connection opened since, from its
// start).
func (d *Daemon) tcpConnsSince(conns []datapath.TCPConnView) []datapath.TCPConnView {
	_, cb := d.statsBase()
	if cb == nil {
		return conns
	}
	for i := range conns {
		c := &conns[i]
		b, ok := cb.conns[connKeyOf(*c)]
		if !ok || c.SegmentsReceived < b.segsRx || c.SegmentsSent < b.segsTx || c.RxBytes < b.rxBytes ||
			c.TxBytes < b.txBytes || c.Retransmits < b.retransmits {
			continue // another connection of the same addresses
		}
		c.SegmentsReceived -= b.segsRx
		c.SegmentsSent -= b.segsTx
		c.RxBytes -= b.rxBytes
		c.TxBytes -= b.txBytes
		c.Retransmits -= b.retransmits
	}
	return conns
}

// controlStats returns the control socket's counters since the last
// ClearStats.
func (d *Daemon) controlStats() ControlStats {
	st := d.ControlStats()
	if _, cb := d.statsBase(); cb != nil {
		st.Disconnects = subCounts(st.Disconnects, cb.control.Disconnects)
		st.Dropped = subCounts(st.Dropped, cb.control.Dropped)
		st.ShowsRefused -= min(st.ShowsRefused, cb.control.ShowsRefused)
	}
	return st
}

// engineStats returns the datapath's counters since the last ClearStats
// (its targets' as they are: targetSince);
// the gauges among them (reassembly and SYN queue fill, resolver entries,
// the mirror's last sequence number, TCP connections, listeners, orphans
// and buffers) as they are.
func (d *Daemon) engineStats() EngineStats {
	s := d.eng.Stats()
	b, _ := d.statsBase()
	if b == nil {
		return s
	}
	for i := range s.Queues {
		if i < len(b.Queues) && b.Queues[i].Queue == s.Queues[i].Queue {
			s.Queues[i] = s.Queues[i].sub(b.Queues[i])
		}
	}
	s.Totals = s.Totals.sub(b.Totals)
	for k, v := range s.XDP {
		if bv := b.XDP[k]; bv <= v {
			s.XDP[k] = v - bv
		}
	}
	r, br := &s.Resolver, b.Resolver
	if r.Lookups >= br.Lookups && r.Resolved >= br.Resolved && r.Failures >= br.Failures && r.DroppedRequests >= br.DroppedRequests {
		r.Lookups, r.Resolved, r.Failures, r.DroppedRequests = r.Lookups-br.Lookups, r.Resolved-br.Resolved,
			r.Failures-br.Failures, r.DroppedRequests-br.DroppedRequests
	}
	s.PeerErrors = sinceBase(s.PeerErrors, b.PeerErrors)
	s.KernelRx = sinceBase(s.KernelRx, b.KernelRx)
	s.KernelRxDrops = sinceBase(s.KernelRxDrops, b.KernelRxDrops)
	if k, bk := s.Kicks, b.Kicks; k != nil && bk != nil {
		k.Wakes, k.Spurious, k.Muted = sinceBase(k.Wakes, bk.Wakes), sinceBase(k.Spurious, bk.Spurious), sinceBase(k.Muted, bk.Muted)
	}
	s.Mirror = s.Mirror.sub(b.Mirror)
	if t, bt := s.TCP, b.TCP; t != nil && bt != nil {
		t.sub(bt)
	}
	return s
}

// sub returns m's counters less base's; LastSeq, a sequence number, stays.
func (m MirrorStats) sub(base MirrorStats) MirrorStats {
	out := m
	out.Applied, out.Skipped, out.Stale = sinceBase(m.Applied, base.Applied), sinceBase(m.Skipped, base.Skipped), sinceBase(m.Stale, base.Stale)
	out.OutOfOrder, out.Invalid, out.Failed = sinceBase(m.OutOfOrder, base.OutOfOrder), sinceBase(m.Invalid, base.Invalid), sinceBase(m.Failed, base.Failed)
	out.DelMissing, out.Resyncs, out.Checks = sinceBase(m.DelMissing, base.DelMissing), sinceBase(m.Resyncs, base.Resyncs), sinceBase(m.Checks, base.Checks)
	out.NotCompared, out.Divergent = sinceBase(m.NotCompared, base.NotCompared), sinceBase(m.Divergent, base.Divergent)
	out.Missing, out.Extra, out.Mismatched = sinceBase(m.Missing, base.Missing), sinceBase(m.Extra, base.Extra), sinceBase(m.Mismatched, base.Mismatched)
	return out
}

// sub takes base's counters from t's; the gauges (connections, lingering,
// listeners, orphans, buffer bytes and limits) stay.
func (t *TCPEngineStats) sub(base *TCPEngineStats) {
	t.TimeWaitOverflow = sinceBase(t.TimeWaitOverflow, base.TimeWaitOverflow)
	t.RxDropped, t.ChecksumErrors = sinceBase(t.RxDropped, base.RxDropped), sinceBase(t.ChecksumErrors, base.ChecksumErrors)
	t.BuffersClamped = sinceBase(t.BuffersClamped, base.BuffersClamped)
	t.BufferGrowthsHeld = sinceBase(t.BufferGrowthsHeld, base.BufferGrowthsHeld)
	t.Refused, t.OrphansReset = sinceBase(t.Refused, base.Refused), sinceBase(t.OrphansReset, base.OrphansReset)
	t.AbortedOnClose = sinceBase(t.AbortedOnClose, base.AbortedOnClose)
	t.PathMTUMessages = sinceBase(t.PathMTUMessages, base.PathMTUMessages)
	t.ConnectsUnreachable = sinceBase(t.ConnectsUnreachable, base.ConnectsUnreachable)
}

// fill is how full a fifo pair is; ct marks the pair of a cut-through
// session, whose fifos two apps share.
type fill struct {
	rxUsed, rxSize, txUsed, txSize uint64
	ct                             bool
}

// fills are the fifo pairs' fill by app and handle.
type fills map[sessions.AppID]map[flow.Handle]fill

// app sums the fill of one app's pairs. The tx fifo of a cut-through
// pair is the peer's rx fifo: it is counted there, once.
func (f fills) app(id sessions.AppID) fill {
	var s fill
	for _, p := range f[id] {
		s.rxUsed += p.rxUsed
		s.rxSize += p.rxSize
		if !p.ct {
			s.txUsed += p.txUsed
			s.txSize += p.txSize
		}
	}
	return s
}

// fifoFill reads the fill of every fifo pair the daemon knows of.
func (d *Daemon) fifoFill() fills {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := fills{}
	for app, m := range d.fifos {
		pm := make(map[flow.Handle]fill, len(m))
		for h := range m {
			if f, ok := d.pairFillLocked(app, h); ok {
				pm[h] = f
			}
		}
		out[app] = pm
	}
	return out
}

// fifoFillOf reads the fill of the fifo pairs of sessions ss alone: a
// page of sessions costs its rows, however many the daemon has.
func (d *Daemon) fifoFillOf(ss []sessions.SessionInfo) fills {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := fills{}
	for _, s := range ss {
		f, ok := d.pairFillLocked(s.App, s.Handle)
		if !ok {
			continue
		}
		pm := out[s.App]
		if pm == nil {
			pm = map[flow.Handle]fill{}
			out[s.App] = pm
		}
		pm[s.Handle] = f
	}
	return out
}

// pairFillLocked reads the fill of app's pair h, if the daemon knows of
// it and its memory lives; one whose memory went is forgotten.
func (d *Daemon) pairFillLocked(app sessions.AppID, h flow.Handle) (fill, bool) {
	m := d.fifos[app]
	p, ok := m[h]
	if !ok {
		return fill{}, false
	}
	if p.ct != nil {
		if !p.ct.refs.tryRef() {
			// A cut-through session gone for both ends (its memory is
			// freed) that no event took out.
			d.untrackLocked(app, h)
			return fill{}, false
		}
		defer p.ct.release()
	} else if !pairAllocated(p.pair) {
		// A session that ended without a Disconnect or a disconnect
		// event (an app's close through its tx fifo): its fifos went
		// back to the app's memory.
		d.untrackLocked(app, h)
		return fill{}, false
	}
	rx, tx := p.pair.Rx, p.pair.Tx
	if rx == nil || tx == nil {
		return fill{}, false
	}
	f := fill{ct: p.ct != nil}
	u, sz := fifoUsed(rx)
	f.rxUsed, f.rxSize = uint64(u), uint64(sz)
	u, sz = fifoUsed(tx)
	f.txUsed, f.txSize = uint64(u), uint64(sz)
	return f, true
}

// pairAllocated reports whether both fifos of p are still the allocation
// the session got (a nil one counts as allocated).
func pairAllocated(p sessions.FifoPair) bool {
	return (p.Rx == nil || p.Rx.Allocated()) && (p.Tx == nil || p.Tx.Allocated())
}
