package ctlview

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
)

// Filter keeps the rows of a list document that belong to one app or
// namespace.
type Filter struct {
	App *uint32 // nil: any app
	NS  *string // nil: any namespace
}

// Apply returns the list document doc of what with only the rows f keeps.
func (f Filter) Apply(what api.ShowWhat, doc []byte) ([]byte, error) {
	if what == api.ShowStats {
		return nil, errors.New("show stats: --app and --ns filter lists (apps, sessions, listeners, namespaces, rules)")
	}
	var rows []json.RawMessage
	if err := json.Unmarshal(doc, &rows); err != nil {
		return nil, fmt.Errorf("show %v: the daemon sent bad JSON: %w", what, err)
	}
	out := make([]json.RawMessage, 0, len(rows))
	for _, r := range rows {
		var k struct {
			ID        any     `json:"id"`
			App       *uint32 `json:"app"`
			Namespace *string `json:"namespace"`
		}
		if err := json.Unmarshal(r, &k); err != nil {
			return nil, fmt.Errorf("show %v: the daemon sent bad JSON: %w", what, err)
		}
		app, ns := k.App, k.Namespace
		switch what {
		case api.ShowApps:
			if id, ok := k.ID.(float64); ok {
				a := uint32(id)
				app = &a
			}
		case api.ShowNamespaces:
			if id, ok := k.ID.(string); ok {
				ns = &id
			}
		}
		if f.App != nil && (app == nil || *app != *f.App) {
			continue
		}
		if f.NS != nil && (ns == nil || *ns != *f.NS) {
			continue
		}
		out = append(out, r)
	}
	return json.Marshal(out)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

// cell is a name as a table cell: as it is when every character of it is
// printable and it neither starts nor ends with a space, else quoted with
// Go's escapes. A tab or newline in an app's name or a rule's tag (the
// daemon takes any UTF-8) would otherwise break the table's columns and
// rows, and an escape sequence would reach the terminal.
func cell(s string) string {
	if strings.TrimSpace(s) == s && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	return strconv.Quote(s)
}

func handleOrDash(h daemon.Handle) string {
	if h == 0 {
		return "-"
	}
	return h.String()
}

// fifoString is a fifo's fill as used/size.
func fifoString(used, size uint64) string {
	if size == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", used, size)
}

// WriteTable prints a Show document as an aligned table.
func WriteTable(out io.Writer, what api.ShowWhat, doc []byte) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(cols ...any) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprint(tw, "\n")
	}
	bad := func(err error) error { return fmt.Errorf("show %v: the daemon sent bad JSON: %w", what, err) }
	switch what {
	case api.ShowApps:
		var v []daemon.AppView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("ID", "NAME", "NAMESPACE", "SCOPE", "PID", "UID", "GID", "LISTENERS", "SESSIONS", "SEGMENTS", "FIFO USED/SIZE")
		for _, a := range v {
			sessions := strconv.Itoa(a.Sessions)
			if a.Ended > 0 {
				sessions += fmt.Sprintf(" (+%d ended, not closed)", a.Ended)
			}
			row(a.ID, cell(a.Name), cell(a.Namespace), a.Scope, a.PID, a.UID, a.GID, a.Listeners, sessions, len(a.Segments),
				fmt.Sprintf("%d/%d", a.FifoUsed, a.FifoSize))
		}
	case api.ShowSessions:
		var v []daemon.SessionView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("HANDLE", "APP", "NAMESPACE", "STATE", "PROTO", "TCP STATE", "LOCAL", "REMOTE", "WORKER", "PEER",
			"RX FIFO", "TX FIFO", "RECV-Q", "SEND-Q", "RTT MS", "CWND", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "RETRANS", "DROPS")
		for _, s := range v {
			worker := strconv.FormatUint(uint64(s.Worker), 10)
			if s.State == "cut-through" {
				worker = "-"
			}
			retrans, recvQ, sendQ, rtt, cwnd := "-", "-", "-", "-", "-"
			if s.TCPState != "" {
				retrans = strconv.FormatUint(s.Retransmits, 10)
				recvQ, sendQ = strconv.Itoa(s.TCPRecvQ), strconv.Itoa(s.TCPSendQ)
				// As ss -i shows it: smoothed RTT / its variation.
				rtt = fmt.Sprintf("%.3f/%.3f", float64(s.TCPRTT)/1000, float64(s.TCPRTTVar)/1000)
				cwnd = strconv.FormatUint(uint64(s.TCPCwnd), 10)
			}
			row(s.Handle, s.App, cell(s.Namespace), s.State, s.Transport, dash(s.TCPState), dash(s.Local), dash(s.Remote), worker, handleOrDash(s.Peer),
				fifoString(s.RxFifoUsed, s.RxFifoSize), fifoString(s.TxFifoUsed, s.TxFifoSize), recvQ, sendQ, rtt, cwnd,
				s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, retrans, dropsString(s.Drops))
		}
	case api.ShowListeners:
		var v []daemon.ListenerView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("HANDLE", "APP", "URI", "NAMESPACE", "TABLE", "FIB", "PROXY", "RX FIFO", "RX PKTS", "RX BYTES", "DROPS", "ACCEPT Q", "REFUSED")
		for _, l := range v {
			acceptQ, refused := "-", "-"
			if t := l.TCP; t != nil {
				acceptQ, refused = acceptQueue(t), dropsString(t.Refused)
			}
			row(l.Handle, l.App, cell(l.URI), cell(l.Namespace), l.Table, l.FIB, l.Proxy, fifoString(l.RxFifoUsed, l.RxFifoSize),
				l.RxPackets, l.RxBytes, dropsString(l.Drops), acceptQ, refused)
		}
	case api.ShowNamespaces:
		var v []daemon.NamespaceView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("ID", "IFINDEX", "FIB4", "FIB6", "APPS", "LOCAL LISTENERS")
		for _, n := range v {
			row(cell(n.ID), n.IfIndex, n.FIB4, n.FIB6, n.Apps, n.LocalListeners)
		}
	case api.ShowRules:
		var v []daemon.RuleView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("ID", "NAMESPACE", "PROTO", "LOCAL", "LPORT", "REMOTE", "RPORT", "ACTION", "APP", "SCOPE", "TAG", "HITS")
		for _, r := range v {
			app := "-"
			if r.Action == "forward" {
				app = strconv.FormatUint(uint64(r.App), 10)
			}
			row(r.ID, cell(r.Namespace), r.Proto, r.Local, portOrAny(r.LocalPort), r.Remote, portOrAny(r.RemotePort),
				r.Action, app, r.Scope, dash(r.Tag), r.Hits)
		}
	case api.ShowStats:
		var v daemon.StatsView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		netns := cell(v.Netns)
		if netns == "" {
			netns = "(daemon's own)"
		}
		row("version", cell(v.Version))
		state := ""
		switch v.InterfaceState {
		case "", "up":
		case "gone":
			state = ", gone: deleted or moved to another netns; nothing reaches the datapath"
		default:
			state = ", " + v.InterfaceState + ": nothing reaches the datapath until it is up and running"
		}
		row("interface", fmt.Sprintf("%s (ifindex %d, netns %s)%s", cell(v.Interface), v.IfIndex, netns, state))
		row("uptime", (time.Duration(v.UptimeSeconds) * time.Second).String())
		row("counting for", (time.Duration(v.ClearedSeconds) * time.Second).String())
		row("datapath", v.Datapath+xdpMode(v.XDPMode))
		if v.Checksum != "" {
			row("udp checksum", v.Checksum)
		}
		if v.PinDir != "" {
			row("bpf pins", v.PinDir)
		}
		row("workers", v.Workers)
		row("apps", v.Apps)
		row("connections", v.Connections)
		row("namespaces", v.Namespaces)
		row("listeners", v.Listeners)
		row("sessions", v.Sessions)
		row("rules", v.Rules)
		if len(v.XDP) > 0 {
			row("xdp program", countersString(v.XDP, "pass", "redirect", "malformed"))
		}
		if v.PeerErrors > 0 {
			row("peer errors", v.PeerErrors)
		}
		if v.KernelRx+v.KernelRxDrops > 0 {
			row("kernel path rx", fmt.Sprintf("%d delivered, %d dropped", v.KernelRx, v.KernelRxDrops))
		}
		if v.MirrorError != "" {
			row("mirror error", cell(v.MirrorError))
		}
		if t := v.TCP; t != nil {
			row("tcp", fmt.Sprintf("%d connections, %d lingering (%d ended early: tcp.max_time_wait), %d listeners, %d refused, %d orphans (%d reset), %d reset at their app's close",
				t.Connections, t.Lingering, t.TimeWaitOverflow, t.Listeners, t.Refused, t.Orphans, t.OrphansReset, t.AbortedOnClose))
			row("tcp buffers", fmt.Sprintf("%d of %d bytes (a user's apps: %d), %d connections clamped, %d growths held",
				t.BufferBytes, t.BufferLimit, t.UserBufferLimit, t.BuffersClamped, t.BufferGrowthsHeld))
		}
		if len(v.Queues) > 0 {
			row("")
			// A CPU column when workers are pinned (the interface's cpus).
			pinned := slices.ContainsFunc(v.Queues, func(q daemon.QueueStats) bool { return q.CPU != nil })
			cpu := func(q daemon.QueueStats) []any {
				switch {
				case !pinned:
					return nil
				case q.CPU == nil:
					return []any{"-"}
				}
				return []any{*q.CPU}
			}
			head := []any{"QUEUE"}
			if pinned {
				head = append(head, "CPU")
			}
			row(append(head, "RX", "TX", "DELIVERED", "HELD", "PARTIAL-CSUM", "DROPS")...)
			for _, q := range v.Queues {
				row(append(append([]any{q.Queue}, cpu(q)...), q.RxPackets, q.Sent(), q.Delivered, q.Held, q.PartialCsum, dropsString(q.Drops))...)
			}
			if len(v.Queues) > 1 {
				q := v.Totals
				row(append(append([]any{"all"}, cpu(q)...), q.RxPackets, q.Sent(), q.Delivered, q.Held, q.PartialCsum, dropsString(q.Drops))...)
			}
		}
	default:
		return fmt.Errorf("show %v: %w", what, flow.ErrInvalidValue)
	}
	return tw.Flush()
}

// countersString prints the counters first (always) and then every other
// counter that is not zero, in name order.
func countersString(c map[string]uint64, first ...string) string {
	var b strings.Builder
	for _, k := range first {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	keys := make([]string, 0, len(c))
	for k, v := range c {
		if v != 0 && !slices.Contains(first, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, c[k])
	}
	return b.String()
}

func xdpMode(m string) string {
	if m == "" {
		return ""
	}
	return " (xdp " + m + ")"
}

func portOrAny(p uint16) string {
	if p == 0 {
		return "any"
	}
	return strconv.Itoa(int(p))
}

// acceptQueue is a TCP listener's untaken connections of its backlog, "?"
// for the untaken of an app that does not say what it takes.
func acceptQueue(t *daemon.ListenerTCPView) string {
	if t.Untaken < 0 {
		return fmt.Sprintf("?/%d", t.Backlog)
	}
	return fmt.Sprintf("%d/%d", t.Untaken, t.Backlog)
}

func dropsString(d map[string]uint64) string {
	keys := make([]string, 0, len(d))
	for k, v := range d {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "0"
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, d[k])
	}
	return b.String()
}
