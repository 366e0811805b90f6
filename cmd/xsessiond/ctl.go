package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/ctlview"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// ctlTimeout bounds a ctl request: the connect, the Hello and the reply.
// A variable for the tests.
var ctlTimeout = 10 * time.Second

func newCtlCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Talk to a running daemon: show state, top, capture, clear stats, add and delete namespaces and rules",
		Args:  noArgs(""),
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if socket == "" {
				return usagef("--socket is empty: give the daemon's control socket (xsessiond run --socket, %s when not given)", DefaultSocket)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&socket, "socket", DefaultSocket, "the daemon's control socket")
	cmd.AddCommand(newShowCmd(&socket), newNsCmd(&socket), newRuleCmd(&socket), newClearCmd(&socket), newTopCmd(&socket), newCaptureCmd(&socket))
	cmd.AddCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "Help about a ctl command (ctl help show, as xsessiond help ctl show)",
		// No socket needed: the parent's check does not run for it.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := cmd.Find(args)
			switch {
			case err != nil:
				return noArgs("")(cmd, args)
			case len(rest) > 0 && target.HasAvailableSubCommands():
				return noArgs("")(target, rest)
			}
			target.InitDefaultHelpFlag() // listed as --help lists it
			return target.Help()
		},
	})
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

// keepAlivePeriod is how often a long-lived ctl connection (top) sends
// the daemon a request while it has nothing else to ask: the daemon closes
// a connection with no app and no capture that sends nothing for
// control.idle_timeout (30 s by default), which would end a top with a
// long --interval halfway.
var keepAlivePeriod = 500 * time.Millisecond

// keepAlive sends cl a cheap request (show namespaces) every
// keepAlivePeriod until the returned stop is called or cl fails. Replies
// and errors are dropped: a failed connection shows in the caller's own
// requests and streams.
func keepAlive(cl *api.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(keepAlivePeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-cl.Done():
				return
			case <-t.C:
			}
			cctx, ccancel := context.WithTimeout(ctx, ctlTimeout)
			_, fds, _ := cl.Call(cctx, &api.Show{What: api.ShowNamespaces})
			ccancel()
			api.CloseFDs(fds)
		}
	}()
	return func() {
		cancel()
		<-ended
	}
}

// maxSocketPath is the longest path a unix socket's address holds (its
// sun_path less the terminating NUL).
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// ctlError is the one line a person reads for a failed ctl request.
func ctlError(err error, socket string) error {
	var re *api.RemoteError
	notOurs := fmt.Sprintf("give --socket the daemon's control socket (xsessiond run --socket, %s when not given)", DefaultSocket)
	switch {
	case len(socket) > maxSocketPath && errors.Is(err, unix.EINVAL):
		return fmt.Errorf("--socket %s is too long for a unix socket: %d bytes, at most %d bytes: give a shorter path to it (a relative one from its directory, or one through a symlink to that directory)", socket, len(socket), maxSocketPath)
	case errors.Is(err, api.ErrNoDaemon) || errors.Is(err, unix.ENOTDIR):
		if errors.Is(err, unix.ENOTDIR) {
			// A directory of the path is a file: name it.
			for dir := filepath.Dir(socket); dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
				if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
					return fmt.Errorf("%s: %s is a file, not a directory: %s", socket, dir, notOurs)
				}
			}
		}
		if fi, serr := os.Stat(socket); serr == nil && fi.IsDir() {
			return fmt.Errorf("%s is a directory, not a socket: %s", socket, notOurs)
		} else if serr == nil && fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("%s is not a socket but a file: %s", socket, notOurs)
		}
		return fmt.Errorf("no daemon at %s: is xsessiond run going?", socket)
	case errors.Is(err, unix.EPROTOTYPE):
		return fmt.Errorf("%s is a socket of another kind, not xsessiond's: %s", socket, notOurs)
	case errors.Is(err, fs.ErrPermission):
		if _, serr := os.Stat(socket); errors.Is(serr, fs.ErrPermission) {
			return fmt.Errorf("cannot reach %s: permission denied on its directory %s, which must let your user through (mode 0755; the socket's own mode and group say who may connect)", socket, filepath.Dir(socket))
		}
		return fmt.Errorf("cannot connect to %s: permission denied (is your user in the socket's group?)", socket)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("the daemon at %s did not answer within %v: is it stopped or stuck? (its log says; kill -CONT resumes a stopped one)", socket, ctlTimeout)
	case errors.As(err, &re):
		return re
	case errors.Is(err, io.EOF):
		return fmt.Errorf("the daemon at %s closed the connection: did it stop? (its log says why)", socket)
	}
	return err
}

// withHint adds to the daemon's answer what to type when it is the
// sentinel want.
func withHint(err, want error, hint string) error {
	if errors.Is(err, want) {
		return fmt.Errorf("%w (%s)", err, hint)
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
  sessions     sessions: fifo fill, packets, bytes and drops each way; of TCP
               ones, the state, queues, round-trip time and congestion window
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
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("show %s: one thing at a time, apps, sessions, listeners, namespaces, rules or stats (filter with --app and --ns)", strings.Join(args, " "))
			}
			return nil
		},
		ValidArgs: []string{"apps", "sessions", "listeners", "namespaces", "rules", "stats",
			"app", "session", "listener", "namespace", "ns", "rule", "stat"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				// --json, --app and --ns shape what a show prints: given
				// with nothing to show they would be dropped unseen, and a
				// script reading JSON would read the list's text.
				var given []string
				for _, f := range []string{"json", "app", "ns"} {
					if cmd.Flags().Changed(f) {
						given = append(given, "--"+f)
					}
				}
				if len(given) > 0 {
					return usagef("show %s: show what? Give apps, sessions, listeners, namespaces, rules or stats (show apps %[1]s)", strings.Join(given, " "))
				}
				_, err := io.WriteString(cmd.OutOrStdout(), showList)
				return err
			}
			what, ok := showWords[args[0]]
			if !ok {
				return usagef("show %q: want apps, sessions, listeners, namespaces, rules or stats", args[0])
			}
			filtered := cmd.Flags().Changed("app") || cmd.Flags().Changed("ns")
			if filtered && what == api.ShowStats {
				// Said before the daemon is asked: with none running, the
				// flags' problem is still the one to fix.
				_, err := ctlview.Filter{}.Apply(what, nil)
				return usage(err)
			}
			doc, err := showDoc(cmd, *socket, what)
			if err != nil {
				return err
			}
			if filtered {
				var f ctlview.Filter
				if cmd.Flags().Changed("app") {
					f.App = &appID
				}
				if cmd.Flags().Changed("ns") {
					nsID = daemon.NamespaceName(nsID) // "" names the default namespace, as everywhere
					f.NS = &nsID
				}
				if doc, err = f.Apply(what, doc); err != nil {
					return err
				}
				if string(doc) == "[]" {
					if err := filterExists(cmd, *socket, f); err != nil {
						return err
					}
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
			return ctlview.WriteTable(out, what, doc)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().Uint32Var(&appID, "app", 0, "only the rows of this app (see ctl show apps)")
	cmd.Flags().StringVar(&nsID, "ns", "", "only the rows of this namespace (the default one is named default)")
	return cmd
}

// filterExists says when the app or namespace a filter names is not
// there: a mistyped --ns or an app that is gone is no empty table.
func filterExists(cmd *cobra.Command, socket string, f ctlview.Filter) error {
	type idRow struct {
		ID json.RawMessage `json:"id"`
	}
	type want struct {
		what           api.ShowWhat
		id             any
		flag, one, all string
	}
	var wants []want
	if f.App != nil {
		wants = append(wants, want{api.ShowApps, *f.App, "--app", "app", "apps"})
	}
	if f.NS != nil {
		wants = append(wants, want{api.ShowNamespaces, *f.NS, "--ns", "namespace", "namespaces"})
	}
	for _, w := range wants {
		doc, err := showDoc(cmd, socket, w.what)
		if err != nil {
			return err
		}
		var rows []idRow
		if err := json.Unmarshal(doc, &rows); err != nil {
			return fmt.Errorf("show %s: the daemon sent bad JSON: %w", w.all, err)
		}
		id, _ := json.Marshal(w.id)
		if !slices.ContainsFunc(rows, func(r idRow) bool { return bytes.Equal(r.ID, id) }) {
			return fmt.Errorf("%s %s: no such %s (ctl show %s lists them)", w.flag, id, w.one, w.all)
		}
	}
	return nil
}

// showDoc asks the daemon for the JSON document of what.
// Sessions and listeners come a page at a time (api.Client.ShowAll), each
// page within ctlTimeout.
func showDoc(cmd *cobra.Command, socket string, what api.ShowWhat) ([]byte, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "ctl"})
	cancel()
	if err != nil {
		return nil, ctlError(err, socket)
	}
	defer cl.Close()
	doc, err := cl.ShowAll(cmd.Context(), what, ctlTimeout)
	if err != nil {
		return nil, ctlError(err, socket)
	}
	return doc, nil
}

func newClearCmd(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clear",
		Short: "Clear counters",
		Args:  noArgs(""),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Set the counters show and top print back to zero (the metrics keep counting)",
		Args:  noArgs(""),
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
		Args:  noArgs(""),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var id, iface, netns, secret string
	add := &cobra.Command{
		Use:   "add [ID] --secret N --iface IF [--netns NAME]",
		Short: "Add an app namespace on an interface",
		Long: `Add an app namespace: apps attach to it with its id and secret, and their
sessions live on the interface (in the named netns, or the netns of the
daemon's interface when --netns is not given).`,
		Args: maxArgs(1, "ns add takes one id: ns add ID --secret N --iface IF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if id != "" && id != args[0] {
					return usagef("ns add: two ids, %q and --id %q", args[0], id)
				}
				id = args[0]
			}
			sec, from := api.SecretArg(secret)
			if id == "" || iface == "" || sec == "" {
				return usagef("ns add needs an id (ns add ID or --id ID), --secret (or $%s) and --iface", api.SecretEnv)
			}
			if why := namespaceIDProblem(id); why != "" {
				return usagef("ns add: %s", why)
			}
			if err := ctlview.ValueFits("--iface", iface, api.MaxIfaceLen, "an interface name", "ip link lists the interfaces"); err != nil {
				return usage(err)
			}
			if err := ctlview.ValueFits("--netns", netns, api.MaxNetnsLen, "a netns name", "ip netns list names them"); err != nil {
				return usage(err)
			}
			s, err := parseSecret(sec, from)
			if err != nil {
				return err
			}
			if _, err := call(cmd, *socket, &api.NsAdd{ID: id, Secret: s, Iface: iface, Netns: netns}); err != nil {
				if errors.Is(err, flow.ErrInvalidValue) && strings.Contains(err.Error(), fmt.Sprintf("interface %q does not exist", iface)) {
					return fmt.Errorf("%w (%s)", err, ifaceHint(cmd, *socket, netns))
				}
				return withHint(err, flow.ErrNamespaceExists, "ctl ns set-secret replaces its secret; ctl ns del removes it")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q added on %s\n", id, iface)
			return nil
		},
	}
	add.Flags().StringVar(&id, "id", "", "the namespace id")
	add.Flags().StringVar(&secret, "secret", "", "the secret apps attach with (0 to 2^64-1, decimal, or hex after 0x; default $"+api.SecretEnv+", which other users cannot read in ps)")
	add.Flags().StringVar(&iface, "iface", "", "the namespace's interface")
	add.Flags().StringVar(&netns, "netns", "", "the named network namespace the interface lives in")
	var delID string
	del := &cobra.Command{
		Use:   "del ID",
		Short: "Delete an app namespace that has no apps attached",
		Args:  maxArgs(1, "ns del takes one id: ns del ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if delID != "" && delID != args[0] {
					return usagef("ns del: two ids, %q and --id %q", args[0], delID)
				}
				delID = args[0]
			}
			if delID == "" {
				return usagef("ns del needs the namespace id: ns del ID")
			}
			if err := knownFormID("ns del", delID); err != nil {
				return err
			}
			if _, err := call(cmd, *socket, &api.NsDel{ID: delID}); err != nil {
				err = withHint(err, flow.ErrInvalidNamespace, "ctl show namespaces lists them")
				return withHint(err, flow.ErrNamespaceInUse, fmt.Sprintf("ctl show apps --ns %s lists them; stop them first", delID))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q deleted\n", delID)
			return nil
		},
	}
	del.Flags().StringVar(&delID, "id", "", "the namespace id (or give it as the argument)")
	var rotID, rotSecret string
	rot := &cobra.Command{
		Use:   "set-secret [ID] --secret N",
		Short: "Replace a namespace's secret (later attaches need the new one; attached apps keep working)",
		Args:  maxArgs(1, "ns set-secret takes one id: ns set-secret ID --secret N"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if rotID != "" && rotID != args[0] {
					return usagef("ns set-secret: two ids, %q and --id %q", args[0], rotID)
				}
				rotID = args[0]
			}
			sec, from := api.SecretArg(rotSecret)
			if rotID == "" || sec == "" {
				return usagef("ns set-secret needs --id and --secret, or $%s (or the id as its argument: ns set-secret ID --secret N)", api.SecretEnv)
			}
			if err := knownFormID("ns set-secret", rotID); err != nil {
				return err
			}
			s, err := parseSecret(sec, from)
			if err != nil {
				return err
			}
			if _, err := call(cmd, *socket, &api.NsSetSecret{ID: rotID, Secret: s}); err != nil {
				return withHint(err, flow.ErrInvalidNamespace, "ctl show namespaces lists them")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "namespace %q: secret replaced\n", rotID)
			return nil
		},
	}
	rot.Flags().StringVar(&rotID, "id", "", "the namespace id (or give it as the argument)")
	rot.Flags().StringVar(&rotSecret, "secret", "", "the new secret (0 to 2^64-1, decimal, or hex after 0x; default $"+api.SecretEnv+")")
	cmd.AddCommand(add, del, rot)
	return cmd
}

// knownFormID says when id, given to a command on an existing namespace,
// is not of the form a namespace's id has: no namespace has it, and the
// control protocol would not carry one longer than its limit.
func knownFormID(cmd, id string) error {
	if why := namespaceIDProblem(id); why != "" {
		return usagef("%s: %s: no namespace has such an id (ctl show namespaces lists them)", cmd, why)
	}
	return nil
}

// namespaceIDProblem says what is wrong with id as a namespace's id
// (sessions.ValidNamespaceID, without its sentinel's words), or "".
func namespaceIDProblem(id string) string {
	if err := sessions.ValidNamespaceID(id); err != nil {
		return strings.TrimSuffix(err.Error(), ": "+sessions.ErrInvalidValue.Error())
	}
	return ""
}

// parseSecret reads a namespace's secret as --secret's help writes one
// (api.ParseSecret); from is where it came from (api.SecretArg).
func parseSecret(s, from string) (uint64, error) {
	v, err := api.ParseSecret(s)
	if err != nil {
		return 0, usagef("%s %q: %w", from, s, err)
	}
	return v, nil
}

// ifaceHint is what to type when ns add names an interface that is not
// in the netns it looks in: the command that lists that netns's
// interfaces, and the daemon's interface, the one whose namespaces'
// sessions reach the wire.
func ifaceHint(cmd *cobra.Command, socket, netns string) string {
	var st struct {
		Interface string `json:"interface"`
		Netns     string `json:"netns"`
	}
	if doc, err := showDoc(cmd, socket, api.ShowStats); err != nil || json.Unmarshal(doc, &st) != nil || st.Interface == "" {
		if netns != "" {
			return fmt.Sprintf("ip -n %s link lists the interfaces there", netns)
		}
		return "ip link lists the interfaces of the daemon's netns; --netns NAME names another"
	}
	runsOn := fmt.Sprintf("the daemon runs on %s", st.Interface)
	if st.Netns != "" {
		runsOn += fmt.Sprintf(" in netns %s", st.Netns)
	}
	switch {
	case netns != "":
		return fmt.Sprintf("ip -n %s link lists the interfaces there; %s", netns, runsOn)
	case st.Netns != "":
		return fmt.Sprintf("without --netns the daemon looks in its interface's netns: ip -n %s link lists the interfaces there; %s", st.Netns, runsOn)
	}
	return fmt.Sprintf("ip link lists the interfaces there; %s", runsOn)
}

// emptyTag says when a rule's words give tag an empty value, as
// tag "$TAG" does with TAG unset: rule del would otherwise read the words
// as a rule to match and ask for its proto, and rule add would add a rule
// without a tag.
func emptyTag(cmd string, words []string) error {
	for i := 0; i < len(words); i++ {
		switch words[i] {
		case "proto", "action", "app", "appns", "ns", "scope":
			i++ // its value, whatever it is
		case "tag":
			if i+1 < len(words) && words[i+1] == "" && cmd == "del" {
				return usagef(`rule del tag "": the tag is empty: give the tag of the rules to delete (ctl show rules lists them, in TAG)`)
			}
			if i+1 < len(words) && words[i+1] == "" {
				return usagef(`rule add … tag "": the tag is empty: give the rule a name, or leave tag out`)
			}
			i++
		}
	}
	return nil
}

// needWords is cobra.MinimumNArgs with a message that says what to type.
func needWords(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s", msg)
		}
		return nil
	}
}

func newRuleCmd(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rule",
		Short: "Add or delete session rules",
		Long:  ctlview.RuleHelp,
		Args:  noArgs(""),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var addJSON bool
	add := &cobra.Command{
		Use:   "add proto P ([local PREFIX PORT] [remote PREFIX PORT] | LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT) action A [app N] [scope S] [ns ID] [tag T]",
		Short: "Add a session rule",
		Long:  ctlview.RuleHelp,
		Args:  needWords(2, "rule add needs a rule's words, at least proto P and action A: for example rule add proto udp local 0.0.0.0/0 9000 action drop (see xsessiond ctl rule add --help)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := emptyTag("add", args); err != nil {
				return err
			}
			r, err := ctlview.ParseRule(args, true)
			if err != nil {
				return usage(err)
			}
			m, err := call(cmd, *socket, &api.RuleAdd{Rule: r})
			if err != nil {
				return withHint(err, flow.ErrNotAttached, "ctl show apps lists the apps attached by ID")
			}
			rep, ok := m.(*api.RuleAddReply)
			if !ok {
				return fmt.Errorf("rule add: the daemon answered %v, not the rule's id: see ctl show rules", m.Type())
			}
			if addJSON {
				doc, err := json.Marshal(struct {
					ID uint32 `json:"id"`
				}{rep.ID})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", doc)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rule %d added\n", rep.ID)
			return nil
		},
	}
	add.Flags().BoolVar(&addJSON, "json", false, `print {"id": N} instead of a line`)
	del := &cobra.Command{
		Use:   "del (ID | tag T | proto P [local PREFIX PORT] [remote PREFIX PORT] [scope S] [ns ID])",
		Short: "Delete a session rule by id (see ctl show rules), rules by tag, or the rule matching exactly",
		Long:  ctlview.RuleHelp,
		Args:  needWords(1, "rule del needs a rule id (see ctl show rules), tag T, or the rule's words (see xsessiond ctl rule del --help)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &api.RuleDel{}
			if err := emptyTag("del", args); err != nil {
				return err
			}
			if len(args) == 1 {
				id, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || id == 0 {
					return usagef("rule del %q: want a rule id (see ctl show rules), tag T, or the rule's words", args[0])
				}
				req.ID = uint32(id)
			} else {
				if _, err := strconv.ParseUint(args[0], 10, 32); err == nil {
					return usagef("rule del %s: one rule id at a time, or tag T, or the rule's words (see ctl show rules)", strings.Join(args, " "))
				}
				r, err := ctlview.ParseRule(args, false)
				if err != nil {
					return usage(err)
				}
				req.Rule = r
			}
			if _, err := call(cmd, *socket, req); err != nil {
				return withHint(err, flow.ErrNoRule, "ctl show rules lists them")
			}
			fmt.Fprintln(cmd.OutOrStdout(), "rule deleted")
			return nil
		},
	}
	cmd.AddCommand(add, del)
	return cmd
}
