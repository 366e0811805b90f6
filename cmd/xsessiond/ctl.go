package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
)

const ctlTimeout = 10 * time.Second

func newCtlCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Talk to a running daemon: show state, add and delete namespaces and rules",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&socket, "socket", DefaultSocket, "the daemon's control socket")
	cmd.AddCommand(newShowCmd(&socket), newNsCmd(&socket), newRuleCmd(&socket), newClearCmd(&socket), newTopCmd(&socket), newCaptureCmd(&socket))
	return cmd
}

// call sends one request to the daemon at socket and returns the reply.
func call(cmd *cobra.Command, socket string, req api.Message) (api.Message, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
	defer cancel()
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "ctl"})
	if err != nil {
		return nil, ctlError(err, socket)
	}
	defer cl.Close()
	m, fds, err := cl.Call(ctx, req)
	api.CloseFDs(fds)
	if err != nil {
		return nil, ctlError(err, socket)
	}
	return m, nil
}

// ctlError is the one line a person reads for a failed ctl request.
func ctlError(err error, socket string) error {
	var re *api.RemoteError
	switch {
	case errors.Is(err, api.ErrNoDaemon):
		return fmt.Errorf("no daemon at %s: is xsessiond run going?", socket)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot connect to %s: permission denied (is your user in the socket's group?)", socket)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the daemon at %s did not answer within %v", socket, ctlTimeout)
	case errors.As(err, &re):
		return errors.New(re.Error())
	}
	return err
}

// showWords are the things ctl show shows, with their singular and short
// aliases.
var showWords = map[string]api.ShowWhat{
	"apps": api.ShowApps, "app": api.ShowApps,
	"sessions": api.ShowSessions, "session": api.ShowSessions,
	"listeners": api.ShowListeners, "listener": api.ShowListeners,
	"namespaces": api.ShowNamespaces, "namespace": api.ShowNamespaces, "ns": api.ShowNamespaces,
	"rules": api.ShowRules, "rule": api.ShowRules,
	"stats": api.ShowStats, "stat": api.ShowStats,
}

const showList = `What ctl show shows:

  apps         attached apps, their credentials and fifo memory
  sessions     sessions: fifo fill, packets, bytes and drops each way
  listeners    listeners and what they received
  namespaces   app namespaces (alias: ns)
  rules        session rules
  stats        the daemon, its tables and its datapath's counters, every drop reason

Singular names work too (show session). --json prints the document the
table is made from (docs/cli.md has the schema); --app ID and --ns ID keep
the rows of one app or namespace.
`

func newShowCmd(socket *string) *cobra.Command {
	var asJSON bool
	var appID uint32
	var nsID string
	cmd := &cobra.Command{
		Use:   "show [apps|sessions|listeners|namespaces|rules|stats]",
		Short: "Show the daemon's state as a table (or JSON with --json)",
		Long:  showList,
		Args:  cobra.MaximumNArgs(1),
		ValidArgs: []string{"apps", "sessions", "listeners", "namespaces", "rules", "stats",
			"app", "session", "listener", "namespace", "ns", "rule", "stat"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				_, err := io.WriteString(cmd.OutOrStdout(), showList)
				return err
			}
			what, ok := showWords[args[0]]
			if !ok {
				return fmt.Errorf("show %q: want apps, sessions, listeners, namespaces, rules or stats", args[0])
			}
			doc, err := showDoc(cmd, *socket, what)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("app") || cmd.Flags().Changed("ns") {
				var f rowFilter
				if cmd.Flags().Changed("app") {
					f.app = &appID
				}
				if cmd.Flags().Changed("ns") {
					f.ns = &nsID
				}
				if doc, err = f.apply(what, doc); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				var buf bytes.Buffer
				if err := json.Indent(&buf, doc, "", "  "); err != nil {
					return fmt.Errorf("show %s: the daemon sent bad JSON: %w", args[0], err)
				}
				buf.WriteByte('\n')
				_, err := out.Write(buf.Bytes())
				return err
			}
			return printTable(out, what, doc)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().Uint32Var(&appID, "app", 0, "only the rows of this app (see ctl show apps)")
	cmd.Flags().StringVar(&nsID, "ns", "", "only the rows of this namespace (the default one is named default)")
	return cmd
}

// showDoc asks the daemon for the JSON document of what.
func showDoc(cmd *cobra.Command, socket string, what api.ShowWhat) ([]byte, error) {
	m, err := call(cmd, socket, &api.Show{What: what})
	if err != nil {
		return nil, err
	}
	sr, ok := m.(*api.ShowReply)
	if !ok {
		return nil, fmt.Errorf("show %v: the daemon answered %v", what, m.Type())
	}
	return sr.JSON, nil
}

// rowFilter keeps the rows of a list document that belong to one app or
// namespace.
type rowFilter struct {
	app *uint32
	ns  *string
}

func (f rowFilter) apply(what api.ShowWhat, doc []byte) ([]byte, error) {
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
		if f.app != nil && (app == nil || *app != *f.app) {
			continue
		}
		if f.ns != nil && (ns == nil || *ns != *f.ns) {
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
	return s
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

// printTable prints a Show document as an aligned table.
func printTable(out io.Writer, what api.ShowWhat, doc []byte) error {
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
			row(a.ID, a.Name, a.Namespace, a.Scope, a.PID, a.UID, a.GID, a.Listeners, a.Sessions, len(a.Segments),
				fmt.Sprintf("%d/%d", a.FifoUsed, a.FifoSize))
		}
	case api.ShowSessions:
		var v []daemon.SessionView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("HANDLE", "APP", "NAMESPACE", "STATE", "PROTO", "LOCAL", "REMOTE", "WORKER", "PEER",
			"RX FIFO", "TX FIFO", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS")
		for _, s := range v {
			worker := strconv.FormatUint(uint64(s.Worker), 10)
			if s.State == "cut-through" {
				worker = "-"
			}
			row(s.Handle, s.App, s.Namespace, s.State, s.Transport, dash(s.Local), dash(s.Remote), worker, handleOrDash(s.Peer),
				fifoString(s.RxFifoUsed, s.RxFifoSize), fifoString(s.TxFifoUsed, s.TxFifoSize),
				s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, dropsString(s.Drops))
		}
	case api.ShowListeners:
		var v []daemon.ListenerView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("HANDLE", "APP", "URI", "NAMESPACE", "TABLE", "FIB", "PROXY", "RX FIFO", "RX PKTS", "RX BYTES", "DROPS")
		for _, l := range v {
			row(l.Handle, l.App, l.URI, l.Namespace, l.Table, l.FIB, l.Proxy, fifoString(l.RxFifoUsed, l.RxFifoSize),
				l.RxPackets, l.RxBytes, dropsString(l.Drops))
		}
	case api.ShowNamespaces:
		var v []daemon.NamespaceView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		row("ID", "IFINDEX", "FIB4", "FIB6", "APPS", "LOCAL LISTENERS")
		for _, n := range v {
			row(n.ID, n.IfIndex, n.FIB4, n.FIB6, n.Apps, n.LocalListeners)
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
			row(r.ID, r.Namespace, r.Proto, r.Local, portOrAny(r.LocalPort), r.Remote, portOrAny(r.RemotePort),
				r.Action, app, r.Scope, dash(r.Tag), r.Hits)
		}
	case api.ShowStats:
		var v daemon.StatsView
		if err := json.Unmarshal(doc, &v); err != nil {
			return bad(err)
		}
		netns := v.Netns
		if netns == "" {
			netns = "(daemon's own)"
		}
		row("version", v.Version)
		row("interface", fmt.Sprintf("%s (ifindex %d, netns %s)", v.Interface, v.IfIndex, netns))
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
			row("mirror error", v.MirrorError)
		}
		if len(v.Queues) > 0 {
			row("")
			row("QUEUE", "RX", "TX", "DELIVERED", "HELD", "PARTIAL-CSUM", "DROPS")
			for _, q := range v.Queues {
				row(q.Queue, q.RxPackets, q.TxPackets, q.Delivered, q.Held, q.PartialCsum, dropsString(q.Drops))
			}
			if len(v.Queues) > 1 {
				q := v.Totals
				row("all", q.RxPackets, q.TxPackets, q.Delivered, q.Held, q.PartialCsum, dropsString(q.Drops))
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

func newClearCmd(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clear",
		Short: "Clear counters",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Set the counters show and top print back to zero (the metrics keep counting)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := call(cmd, *socket, &api.StatsClear{}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "counters cleared")
			return nil
		},
	}
	cmd.AddCommand(stats)
	return cmd
}

func newNsCmd(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ns",
		Short: "Add or delete app namespaces, or replace their secrets",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var id, iface, netns, secret string
	add := &cobra.Command{
		Use:   "add [ID] --secret N --iface IF [--netns NAME]",
		Short: "Add an app namespace on an interface",
		Long: `Add an app namespace: apps attach to it with its id and secret, and their
sessions live on the interface (in the named netns, or the netns of the
daemon's interface when --netns is not given).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if id != "" && id != args[0] {
					return fmt.Errorf("ns add: two ids, %q and --id %q", args[0], id)
				}
				id = args[0]
			}
			if id == "" || iface == "" || secret == "" {
				return errors.New("ns add needs an id (ns add ID or --id ID), --secret and --iface")
			}
			s, err := strconv.ParseUint(secret, 0, 64)
			if err != nil {
				return fmt.Errorf("--secret %q: want a number (0 to 2^64-1)", secret)
			}
			if _, err := call(cmd, *socket, &api.NsAdd{ID: id, Secret: s, Iface: iface, Netns: netns}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q added on %s\n", id, iface)
			return nil
		},
	}
	add.Flags().StringVar(&id, "id", "", "the namespace id")
	add.Flags().StringVar(&secret, "secret", "", "the secret apps attach with (a 64-bit number)")
	add.Flags().StringVar(&iface, "iface", "", "the namespace's interface")
	add.Flags().StringVar(&netns, "netns", "", "the named network namespace the interface lives in")
	var delID string
	del := &cobra.Command{
		Use:   "del ID",
		Short: "Delete an app namespace that has no apps attached",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if delID != "" && delID != args[0] {
					return fmt.Errorf("ns del: two ids, %q and --id %q", args[0], delID)
				}
				delID = args[0]
			}
			if delID == "" {
				return errors.New("ns del needs the namespace id: ns del ID")
			}
			if _, err := call(cmd, *socket, &api.NsDel{ID: delID}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q deleted\n", delID)
			return nil
		},
	}
	del.Flags().StringVar(&delID, "id", "", "the namespace id (or give it as the argument)")
	var rotID, rotSecret string
	rot := &cobra.Command{
		Use:   "set-secret --id ID --secret N",
		Short: "Replace a namespace's secret (later attaches need the new one; attached apps keep working)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rotID == "" || rotSecret == "" {
				return errors.New("ns set-secret needs --id and --secret")
			}
			s, err := strconv.ParseUint(rotSecret, 0, 64)
			if err != nil {
				return fmt.Errorf("--secret %q: want a number (0 to 2^64-1)", rotSecret)
			}
			if _, err := call(cmd, *socket, &api.NsSetSecret{ID: rotID, Secret: s}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q: secret replaced\n", rotID)
			return nil
		},
	}
	rot.Flags().StringVar(&rotID, "id", "", "the namespace id")
	rot.Flags().StringVar(&rotSecret, "secret", "", "the new secret (a 64-bit number)")
	cmd.AddCommand(add, del, rot)
	return cmd
}

const ruleHelp = `A rule is given as words, as VPP's "session rule add" takes them:

  proto udp|tcp            the transport (required; UDP and TCP too)
  local PREFIX [PORT]      this host's side: a prefix like 0.0.0.0/0 and a port (0: any)
  remote PREFIX [PORT]     the peer's side
  action drop|allow|forward|N
                           N, an app index, is "forward app N"
  app N                    the app index a forward rule hands matches to (see ctl show apps)
  scope global|local|both  which tables hold the rule (default global)
  ns ID | appns ID         the app namespace (default: the default namespace)
  tag T                    a name for the rule; "rule del tag T" deletes by tag

VPP's own order works too: right after the protocol, the local prefix and
port and the remote prefix and port, without the words local and remote:

  proto UDP LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT action ... [scope S] [appns ID] [tag T]

Global rules act on connects of global-scope apps and on the wire: a
datagram for a bound port that a drop rule matches is dropped, one a
forward rule matches goes to that app's listener of the port (an app of the
rule's namespace), allow lets the normal lookup run. Local rules act on
connects of local-scope apps only. "ctl show rules" lists each rule's id
and hits; "rule del ID" deletes by id.

Examples:

  xsessiond ctl rule add proto udp local 0.0.0.0/0 9000 remote 10.0.0.0/8 0 action drop scope global tag T
  xsessiond ctl rule add proto UDP 0.0.0.0/0 9000 10.0.0.0/8 0 action drop scope global appns blue tag t1
  xsessiond ctl rule del 3`

func newRuleCmd(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rule",
		Short: "Add or delete session rules",
		Long:  ruleHelp,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	add := &cobra.Command{
		Use:   "add proto P ([local PREFIX PORT] [remote PREFIX PORT] | LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT) action A [app N] [scope S] [ns ID] [tag T]",
		Short: "Add a session rule",
		Long:  ruleHelp,
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRuleWords(args, true)
			if err != nil {
				return err
			}
			if _, err := call(cmd, *socket, &api.RuleAdd{Rule: r}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "rule added")
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "del (ID | tag T | proto P [local PREFIX PORT] [remote PREFIX PORT] [scope S] [ns ID])",
		Short: "Delete a session rule by id (see ctl show rules), rules by tag, or the rule matching exactly",
		Long:  ruleHelp,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &api.RuleDel{}
			if len(args) == 1 {
				id, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || id == 0 {
					return fmt.Errorf("rule del %q: want a rule id (see ctl show rules), tag T, or the rule's words", args[0])
				}
				req.ID = uint32(id)
			} else {
				r, err := parseRuleWords(args, false)
				if err != nil {
					return err
				}
				req.Rule = r
			}
			if _, err := call(cmd, *socket, req); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "rule deleted")
			return nil
		},
	}
	cmd.AddCommand(add, del)
	return cmd
}

// parseRuleWords reads the words of `rule add` (forAdd) or `rule del`.
func parseRuleWords(words []string, forAdd bool) (api.Rule, error) {
	var r api.Rule
	r.Scope = flow.ScopeGlobal
	var haveProto, haveAction bool
	next := func(i *int, what string) (string, error) {
		if *i+1 >= len(words) {
			return "", fmt.Errorf("%q needs %s", words[*i], what)
		}
		*i++
		return words[*i], nil
	}
	port := func(i *int) (uint16, error) {
		if *i+1 >= len(words) {
			return 0, nil
		}
		p, err := strconv.ParseUint(words[*i+1], 10, 16)
		if err != nil {
			return 0, nil // not a port: the next keyword
		}
		*i++
		return uint16(p), nil
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch w {
		case "proto":
			v, err := next(&i, "udp or tcp")
			if err != nil {
				return r, err
			}
			if r.Transport, err = daemon.ParseTransport(strings.ToLower(v)); err != nil {
				return r, fmt.Errorf("proto %q: want udp or tcp", v)
			}
			haveProto = true
			// VPP's order: LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT.
			if i+1 < len(words) && strings.Contains(words[i+1], "/") {
				if i+4 >= len(words) {
					return r, fmt.Errorf("proto %s LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT: %d of the 4 words given", v, len(words)-i-1)
				}
				for _, side := range []struct {
					name string
					p    *netip.Prefix
					port *uint16
				}{{"local", &r.Local, &r.LocalPort}, {"remote", &r.Remote, &r.RemotePort}} {
					pv, portv := words[i+1], words[i+2]
					if *side.p, err = daemon.ParsePrefix(pv); err != nil {
						return r, fmt.Errorf("%s prefix %q: want a prefix like 10.0.0.0/8", side.name, pv)
					}
					pt, err := strconv.ParseUint(portv, 10, 16)
					if err != nil {
						return r, fmt.Errorf("%s port %q: want a port (0: any)", side.name, portv)
					}
					*side.port = uint16(pt)
					i += 2
				}
			}
		case "local", "remote":
			v, err := next(&i, "a prefix like 10.0.0.0/8")
			if err != nil {
				return r, err
			}
			p, err := daemon.ParsePrefix(v)
			if err != nil {
				return r, fmt.Errorf("%s %q: want a prefix like 10.0.0.0/8", w, v)
			}
			pt, _ := port(&i)
			if w == "local" {
				r.Local, r.LocalPort = p, pt
			} else {
				r.Remote, r.RemotePort = p, pt
			}
		case "action":
			v, err := next(&i, "drop, allow or forward")
			if err != nil {
				return r, err
			}
			if n, nerr := strconv.ParseUint(v, 10, 32); nerr == nil && n > 0 {
				r.Action, r.AppIndex = api.ActionForward, uint32(n) // VPP: the action is the app index
			} else if r.Action, err = daemon.ParseAction(v); err != nil {
				return r, fmt.Errorf("action %q: want drop, allow, forward or an app index", v)
			}
			haveAction = true
		case "app", "appns", "ns", "scope", "tag":
			v, err := next(&i, "a value")
			if err != nil {
				return r, err
			}
			switch w {
			case "app":
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return r, fmt.Errorf("app %q: want an app index (see ctl show apps)", v)
				}
				r.AppIndex = uint32(n)
			case "ns", "appns":
				r.Namespace = v
			case "scope":
				if r.Scope, err = daemon.ParseScope(v); err != nil {
					return r, fmt.Errorf("scope %q: want global, local or both", v)
				}
			case "tag":
				r.Tag = v
			}
		default:
			return r, fmt.Errorf("unknown word %q (see xsessiond ctl rule --help)", w)
		}
	}
	if !forAdd && r.Tag != "" {
		return r, nil
	}
	if !haveProto {
		return r, errors.New("the rule needs proto udp|tcp")
	}
	if forAdd && !haveAction {
		return r, errors.New("the rule needs action drop|allow|forward")
	}
	if forAdd && r.Action == api.ActionForward && r.AppIndex == 0 {
		return r, errors.New("action forward needs app N")
	}
	if forAdd && r.Action != api.ActionForward && r.AppIndex != 0 {
		return r, errors.New("app N goes with action forward only")
	}
	if !forAdd && r.Action == 0 {
		r.Action = api.ActionDrop // ignored by the match; keeps the rule valid
	}
	return r, nil
}
