package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind"
)

// runFlags are the flags of `xsessiond run`; each one given overrides the
// config file.
type runFlags struct {
	iface, netns, socket, config, metrics, logLevel, xdpMode, checksum, sched, cpus string
	queues                                                                          int
	sendTimeout, idleTimeout                                                        time.Duration
	maxConns                                                                        int
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon on one interface",
		Long: `Run the daemon: attach the XDP program to the interface, start one worker
per queue, and serve apps and the CLI on the control socket.

Flags override the config file. SIGHUP reloads the namespaces and rules of
the config file; SIGTERM and SIGINT detach XDP (the interface's traffic goes
back to the kernel at once), tell the apps, close their connections, stop
the workers and unpin, then exit 0. If the interface is
deleted or leaves its network namespace, the daemon stops the same way and
exits 1; so does a start that fails. Once started it removes the pins of
interfaces that no longer exist (see xsessiond cleanup --stale).

With --netns NAME the interface lives in the named network namespace
(/run/netns/NAME): the daemon does everything that depends on a netns there.
The control socket is a path in the file system and does not depend on it.

--iface and --netns override the config file's interface, and its
namespaces follow: when they name an interface the file does not list, a
namespaces[] entry whose iface is the file's interface (with its netns or
none) names the one the daemon runs on. Entries naming other interfaces
stay as they are.

The daemon logs to stderr. When whatever reads its log goes away (a pipe
closed), it keeps serving and its log lines are lost; it still stops and
cleans up on SIGTERM and SIGINT.`,
		Args: noArgs("give the interface with --iface IF"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.iface, "iface", "", "the interface to run on (required here or in the config file); the config's namespaces on the file's interface follow it")
	fl.StringVar(&f.netns, "netns", "", "the named network namespace the interface lives in (default: the daemon's own)")
	fl.IntVar(&f.queues, "queues", 0, "rx queues to serve, one worker each (0: every queue of the interface)")
	fl.StringVar(&f.cpus, "cpus", "", "CPUs the workers run on, worker q on the q-th of the list (2-5,8: give the CPUs that take the queues' interrupts); empty: the scheduler places them")
	fl.StringVar(&f.socket, "socket", DefaultSocket, "the control socket")
	fl.StringVar(&f.config, "config", "", "YAML config file (see deploy/xsessiond.yaml)")
	fl.StringVar(&f.metrics, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (empty: off)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.xdpMode, "xdp-mode", "auto", "auto (generic on a veth with one rx queue, else native, falling back to generic), native or generic")
	fl.DurationVar(&f.sendTimeout, "send-timeout", 0, "drop a client (and detach its app) that leaves a reply or notice unread this long, or takes twice this long to read one long show reply (0: 2s)")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 0, "close a connection with no app attached nor a capture started that sends nothing this long (0: 30s, negative: never)")
	fl.IntVar(&f.maxConns, "max-conns", 0, "control connections at most, root_reserve (8) of them kept for root, so more than that (0: 1024, negative: no limit)")
	fl.StringVar(&f.sched, "sched-policy", daemon.SchedKeep, "scheduling policy of the daemon's threads: keep (the one it was started with, e.g. under chrt) or batch (SCHED_BATCH: a woken worker waits for the thread on its CPU to block or yield instead of preempting it: more transactions per second where apps share the daemon's CPU, milliseconds of latency where a busy program does)")
	fl.StringVar(&f.checksum, "checksum", "auto", "UDP checksums holding a local sender's partial sum (offload): auto (accept on veth, netkit, tun), verify or accept-partial")
	return cmd
}

// mergeRunConfig applies the flags given over the config file.
func mergeRunConfig(cmd *cobra.Command, f runFlags, c *Config) (daemon.Config, error) {
	changed := cmd.Flags().Changed
	var ic InterfaceConfig
	if len(c.Interfaces) > 0 {
		ic = c.Interfaces[0]
	}
	// --iface picks the file's entry of that interface (of --netns's
	// netns when given too), with its settings; one the file does not
	// list takes the first entry's.
	for _, e := range c.Interfaces {
		if changed("iface") && e.Name == f.iface && (!changed("netns") || e.Netns == f.netns) {
			ic = e
			break
		}
	}
	if changed("iface") {
		ic.Name = f.iface // the file's other settings for the interface stay
	}
	if changed("netns") {
		ic.Netns = f.netns
	}
	c.Namespaces = followInterface(c.Namespaces, c.Interfaces, ic)
	if changed("queues") {
		ic.Queues = f.queues
	}
	if changed("cpus") {
		ic.CPUs = f.cpus
	}
	var cpus []int
	if ic.CPUs != "" {
		var err error
		if cpus, err = datapath.ParseCPUList(ic.CPUs); err == nil {
			err = datapath.CheckCPUs(cpus)
		}
		if err != nil {
			return daemon.Config{}, fmt.Errorf("--cpus: %s", strings.TrimSuffix(err.Error(), ": "+datapath.ErrInvalidConfig.Error()))
		}
	}
	if changed("xdp-mode") || ic.XDPMode == "" {
		ic.XDPMode = f.xdpMode
	}
	switch ic.XDPMode {
	case "auto", "native", "generic":
	default:
		return daemon.Config{}, fmt.Errorf("--xdp-mode %q: want auto, native or generic", ic.XDPMode)
	}
	if changed("checksum") || ic.Checksum == "" {
		ic.Checksum = f.checksum
	}
	if _, err := datapath.ParseChecksum(ic.Checksum); err != nil {
		return daemon.Config{}, fmt.Errorf("--checksum %q: want auto, verify or accept-partial", ic.Checksum)
	}
	if ic.Name == "" {
		return daemon.Config{}, errors.New("no interface: give --iface or list one in the config file")
	}
	if f.queues < 0 {
		return daemon.Config{}, errors.New("--queues must be 0 or more")
	}
	if changed("socket") && f.socket == "" {
		return daemon.Config{}, fmt.Errorf("--socket is empty: give the control socket's path (%s when not given)", DefaultSocket)
	}
	if changed("socket") || c.Socket == "" {
		c.Socket = f.socket
	}
	if changed("metrics-addr") {
		c.MetricsAddr = f.metrics
	}
	if changed("send-timeout") {
		if f.sendTimeout < 0 {
			return daemon.Config{}, errors.New("--send-timeout must be 0 or more")
		}
		c.Control.SendTimeout = f.sendTimeout
	}
	if changed("idle-timeout") {
		c.Control.IdleTimeout = f.idleTimeout
	}
	if changed("max-conns") {
		c.Control.MaxConns = f.maxConns
	}
	if changed("log-level") || c.LogLevel == "" {
		c.LogLevel = f.logLevel
	}
	if changed("sched-policy") || c.SchedPolicy == "" {
		c.SchedPolicy = f.sched
	}
	if err := daemon.CheckSchedPolicy(c.SchedPolicy); err != nil {
		return daemon.Config{}, fmt.Errorf("--sched-policy: %w", err)
	}
	dp := datapath.Config{IfName: ic.Name, NetnsName: ic.Netns, Queues: ic.Queues, Batch: ic.Batch, BusyPoll: ic.BusyPoll, XDPMode: ic.XDPMode, Checksum: ic.Checksum}
	dp.Reassembly = reasm.Config{MaxDatagrams: ic.Reassembly.MaxDatagrams, MaxFragments: ic.Reassembly.MaxFragments, Timeout: ic.Reassembly.Timeout, Timeout6: ic.Reassembly.Timeout}
	dp.IdleSpin, dp.IdleSpinMax = offSetting(ic.IdleSpin), offSetting(ic.IdleSpinMax)
	dp.CPUs = cpus
	dp.TCP.Stack.ConnectTimeout = c.TCP.ConnectTimeout
	dp.TCP.Stack.CloseTimeout = c.TCP.CloseTimeout
	dp.TCP.NoGSO = c.TCP.NoGSO
	dp.TCP.MaxTimeWait = c.TCP.MaxTimeWait
	dp.TCP.SynRate = c.TCP.SynRate
	dp.TCP.Stack.AckDelay = offSetting(c.TCP.AckDelay)
	dp.TCP.Stack.BufferBytes, dp.TCP.Stack.GroupBufferBytes = c.TCP.BufferMemory, c.TCP.UserBufferMemory
	return daemon.Config{
		Datapath: dp,
		Socket:   c.Socket, SocketGroup: c.SocketGroup, MetricsAddr: c.MetricsAddr,
		Namespaces: c.Namespaces, Rules: c.Rules, Version: buildVersion(), Control: c.Control,
		Limits: c.Limits, Auth: c.Authorization,
	}, nil
}

// followInterface returns namespaces with each entry that names the
// config file's interface (its first: iface its name, netns empty or its
// netns) naming the interface the daemon runs on instead, when --iface or
// --netns put the daemon on one the file does not list; entries naming
// other interfaces are kept as they are. An entry's empty netns, the
// netns of the daemon's interface, stays empty.
func followInterface(namespaces []daemon.NamespaceConfig, file []InterfaceConfig, run InterfaceConfig) []daemon.NamespaceConfig {
	if len(file) == 0 || len(namespaces) == 0 {
		return namespaces
	}
	for _, ic := range file {
		if ic.Name == run.Name && ic.Netns == run.Netns {
			return namespaces // one the file lists: its entries are right
		}
	}
	was := file[0]
	out := slices.Clone(namespaces)
	for i := range out {
		n := &out[i]
		if n.Iface != was.Name || (n.Netns != "" && n.Netns != was.Netns) {
			continue
		}
		n.Iface = run.Name
		if n.Netns != "" {
			n.Netns = run.Netns
		}
	}
	return out
}

// wantNOFILE is the descriptor limit under which run warns: what a
// single-address interface's ports take with every one held by an app (UDP
// and TCP), beside the stack's connections (tcp.Options.MaxConns) and the
// cut-through sessions (limits.max_cut_through), with room for the rest.
const wantNOFILE = 1 << 18

// fewDescriptors reports the process's descriptor limit when it is below
// wantNOFILE (Go raised the soft limit to the hard one at start).
func fewDescriptors() (uint64, bool) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, rl.Cur < wantNOFILE
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

func runDaemon(cmd *cobra.Command, f runFlags) error {
	// A log write to a pipe whose reader went away (run | head, a closed
	// terminal or journal) would otherwise kill the daemon with SIGPIPE,
	// leaving its program attached and its pins: with SIGPIPE handled the
	// write fails with EPIPE, the line is lost and the daemon serves on.
	// Notify, not Ignore: a child the daemon starts gets SIGPIPE's default.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	cfg := &Config{}
	if f.config != "" {
		var err error
		if cfg, err = LoadConfig(f.config); err != nil {
			return usageError{err}
		}
	}
	opts, err := mergeRunConfig(cmd, f, cfg)
	if err != nil {
		return usageError{err}
	}
	if err := checkNetns(opts.Datapath.NetnsName); err != nil {
		return err
	}
	level, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return usageError{err}
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	opts.Logger = log
	tcp.LogTo(log)
	for _, w := range cfg.exposure(f.config) {
		log.Warn("secrets exposed: " + w)
	}
	if len(cfg.Interfaces) > 1 && !cmd.Flags().Changed("iface") {
		return fmt.Errorf("the config lists %d interfaces and a daemon serves one: run one xsessiond per interface, each with its own --socket (and --metrics-addr, when the config serves metrics), and pick it with --iface", len(cfg.Interfaces))
	}
	if problem := privilegeProblem(opts.Datapath.NetnsName != ""); problem != "" {
		return fmt.Errorf("not privileged: %s; run it as root (sudo xsessiond run ...)", problem)
	}
	if err := daemon.SetSchedPolicy(cfg.SchedPolicy); err != nil {
		log.Warn("scheduling policy not set; the daemon runs with the one it was started with", "policy", cfg.SchedPolicy, "err", err)
	}
	// Signals are taken before the daemon says it started, so that a
	// SIGTERM right after that line stops it cleanly (detach, unpin)
	// instead of killing it; one that comes while it starts is handled
	// once it has.
	// A stop has a channel of its own: SIGHUPs queued behind a long
	// reload would fill a shared one, and the signal package drops what
	// does not fit. SIGHUPs that come during a reload merge into one
	// more reload, which reads the latest file.
	stop, hup := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(stop)
	defer signal.Stop(hup)
	d, err := daemon.New(opts)
	if err != nil {
		return startError(err, opts.Socket, opts.Datapath.NetnsName)
	}
	if err := d.Start(); err != nil {
		return startError(err, opts.Socket, opts.Datapath.NetnsName)
	}
	// Pins of interfaces that are gone (a killed daemon's, in a netns
	// deleted since) hold programs and maps in the kernel for good. Once
	// started: a start that fails says that alone.
	rep, err := loader.SweepStale("")
	if len(rep.Dirs) > 0 {
		log.Info("removed the pins of interfaces that no longer exist", "dirs", rep.Dirs)
	}
	if err != nil {
		log.Warn("removing the pins of interfaces that no longer exist", "err", err, "removed", len(rep.Dirs))
	}
	// And the lock files killed daemons left, one per interface each
	// served (this daemon holds its own).
	locks, err := daemon.SweepStaleLocks("")
	if len(locks) > 0 {
		log.Info("removed the lock files no daemon held", "files", locks)
	}
	if err != nil {
		log.Warn("removing the lock files no daemon held", "err", err, "removed", len(locks))
	}
	// A daemon started on an interface that is down (or without a
	// carrier) serves nothing until it comes up: say so at the start
	// rather than leave it to ctl show stats.
	if st := d.Stats().InterfaceState; st == "down" || st == "no-carrier" {
		is, hint := "up without a carrier", "its link partner, or a veth's peer, is down"
		if st == "down" {
			is = "down"
			ipn := "ip"
			if opts.Datapath.NetnsName != "" {
				ipn += " -n " + opts.Datapath.NetnsName
			}
			hint = fmt.Sprintf("%s link set dev %s up", ipn, opts.Datapath.IfName)
		}
		log.Warn(fmt.Sprintf("the interface is %s: nothing reaches the datapath until it is up and running (%s)", is, hint),
			"iface", opts.Datapath.IfName, "netns", opts.Datapath.NetnsName, "state", st)
	}
	if n, ok := fewDescriptors(); ok {
		log.Warn("few descriptors: apps' listeners, connections and cut-through sessions hold descriptors of the daemon's, and the port space and limits allow more than this; raise LimitNOFILE (the unit in deploy/ sets 1048576) or ulimit -n",
			"nofile", n, "want", wantNOFILE)
	}
	for {
		var s os.Signal
		select {
		case s = <-stop:
		case s = <-hup:
		case <-d.InterfaceLost():
			log.Info("stopping", "reason", "interface lost")
			return errors.Join(fmt.Errorf("%w; stopped", d.InterfaceLostErr()), d.Close())
		}
		if s == syscall.SIGHUP {
			// A stop that came with it goes first.
			select {
			case s = <-stop:
			default:
			}
		}
		if s == syscall.SIGHUP {
			if f.config == "" {
				log.Warn("SIGHUP: no config file to reload")
				continue
			}
			c, err := LoadConfig(f.config)
			if err != nil {
				log.Error("SIGHUP: config not reloaded", "err", err)
				continue
			}
			for _, w := range c.exposure(f.config) {
				log.Warn("SIGHUP: secrets exposed: " + w)
			}
			var unapplied []string
			if next, err := mergeRunConfig(cmd, f, c); err != nil {
				unapplied = append(unapplied, err.Error())
			} else {
				unapplied = restartNeeded(opts, next)
			}
			if c.LogLevel != cfg.LogLevel && !cmd.Flags().Changed("log-level") {
				unapplied = append(unapplied, fmt.Sprintf("log_level %q -> %q", cfg.LogLevel, c.LogLevel))
			}
			if c.SchedPolicy != cfg.SchedPolicy && !cmd.Flags().Changed("sched-policy") {
				unapplied = append(unapplied, fmt.Sprintf("sched_policy %q -> %q", cfg.SchedPolicy, c.SchedPolicy))
			}
			for _, u := range unapplied {
				log.Warn("SIGHUP: not applied, needs a restart: " + u)
			}
			if err := d.Reload(c.Namespaces, c.Rules); err != nil {
				log.Error("SIGHUP: namespaces and rules reloaded with errors", "err", err, "not_applied", len(unapplied))
				continue
			}
			if len(unapplied) > 0 {
				log.Warn("SIGHUP: namespaces and rules reloaded; other changes need a restart", "namespaces", len(c.Namespaces), "rules", len(c.Rules), "not_applied", len(unapplied))
				continue
			}
			log.Info("SIGHUP: config reloaded", "namespaces", len(c.Namespaces), "rules", len(c.Rules))
			continue
		}
		log.Info("stopping", "signal", s.String())
		return d.Close()
	}
}

// restartNeeded lists the settings that differ between the running
// configuration and the one a SIGHUP read, other than namespaces and rules:
// they take effect only on a restart.
func restartNeeded(cur, next daemon.Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if a != b {
			out = append(out, fmt.Sprintf("%s %v -> %v", name, a, b))
		}
	}
	a, b := cur.Datapath, next.Datapath
	diff("interface", a.IfName, b.IfName)
	diff("netns", a.NetnsName, b.NetnsName)
	diff("queues", a.Queues, b.Queues)
	diff("cpus", fmt.Sprint(a.CPUs), fmt.Sprint(b.CPUs))
	diff("xdp_mode", a.XDPMode, b.XDPMode)
	diff("batch", a.Batch, b.Batch)
	diff("busy_poll", a.BusyPoll, b.BusyPoll)
	diff("checksum", a.Checksum, b.Checksum)
	fields := func(name string, a, b any) {
		if a != b {
			out = append(out, name+" "+fieldChanges(a, b))
		}
	}
	ra, rb := a.Reassembly, b.Reassembly
	ra.Timeout6, rb.Timeout6 = 0, 0 // the file's timeout sets both
	fields("reassembly", ra, rb)
	diff("idle_spin", a.IdleSpin, b.IdleSpin)
	diff("idle_spin_max", a.IdleSpinMax, b.IdleSpinMax)
	diff("tcp.connect_timeout", a.TCP.Stack.ConnectTimeout, b.TCP.Stack.ConnectTimeout)
	diff("tcp.no_gso", a.TCP.NoGSO, b.TCP.NoGSO)
	diff("tcp.ack_delay", a.TCP.Stack.AckDelay, b.TCP.Stack.AckDelay)
	diff("tcp.close_timeout", a.TCP.Stack.CloseTimeout, b.TCP.Stack.CloseTimeout)
	diff("tcp.buffer_memory", a.TCP.Stack.BufferBytes, b.TCP.Stack.BufferBytes)
	diff("tcp.user_buffer_memory", a.TCP.Stack.GroupBufferBytes, b.TCP.Stack.GroupBufferBytes)
	diff("tcp.max_time_wait", a.TCP.MaxTimeWait, b.TCP.MaxTimeWait)
	diff("tcp.syn_rate", a.TCP.SynRate, b.TCP.SynRate)
	diff("socket", cur.Socket, next.Socket)
	diff("socket_group", cur.SocketGroup, next.SocketGroup)
	diff("metrics_addr", cur.MetricsAddr, next.MetricsAddr)
	fields("control", cur.Control, next.Control)
	fields("limits", cur.Limits, next.Limits)
	fields("authorization", cur.Auth, next.Auth)
	return out
}

// fieldChanges names the fields that differ between a and b, values of
// one struct type, by their config file keys and values (max_apps
// default -> 1000, timeout 30s -> 10s), rather than the two structs' every
// value.
func fieldChanges(a, b any) string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Kind() != reflect.Struct || va.Type() != vb.Type() {
		return fmt.Sprintf("%v -> %v", a, b)
	}
	var changes []string
	for i := range va.NumField() {
		f := va.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		x, y := va.Field(i).Interface(), vb.Field(i).Interface()
		if reflect.DeepEqual(x, y) {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" {
			key = snakeCase(f.Name)
		}
		changes = append(changes, fmt.Sprintf("%s %s -> %s", key, keyValue(va.Field(i)), keyValue(vb.Field(i))))
	}
	return strings.Join(changes, ", ")
}

// keyValue is a config key's value as a person reads it: a zero value,
// the key left out, is the default.
func keyValue(v reflect.Value) string {
	if v.IsZero() {
		return "default"
	}
	return fmt.Sprint(v.Interface())
}

// snakeCase is a Go field's name as the config file's keys are written:
// MaxDatagrams, max_datagrams.
func snakeCase(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// startError turns a start failure into the one line a person reads;
// netns is the named netns of the daemon's interface ("": its own).
func startError(err error, socket, netns string) error {
	if errors.Is(err, api.ErrDaemonRunning) {
		return fmt.Errorf("another xsessiond is already running on %s: give this one another --socket, or stop that one first", socket)
	}
	msg := err.Error()
	if i := strings.Index(msg, ": "+daemon.ErrNoInterface.Error()); i >= 0 && errors.Is(err, daemon.ErrNoInterface) {
		if netns != "" {
			return fmt.Errorf("%s: ip -n %s link lists the interfaces there", msg[:i], netns)
		}
		return fmt.Errorf("%s: ip link lists the interfaces there; one in a named netns needs --netns NAME (ip netns list)", msg[:i])
	}
	return err
}

// checkNetns says when the named network namespace ("": the daemon's
// own) does not exist, in words that say where to look.
func checkNetns(name string) error {
	if name == "" {
		return nil
	}
	ns, err := nsbind.OpenNamed(name)
	if errors.Is(err, nsbind.ErrNoNamespace) {
		return fmt.Errorf("netns %q: no such network namespace in %s: ip netns list names the ones there are", name, nsbind.NamedDir)
	}
	if err == nil {
		ns.Close()
	}
	return nil
}

// privilegeProblem says what the daemon lacks to run, or "".
func privilegeProblem(netns bool) string {
	var hdr unix.CapUserHeader
	var data [2]unix.CapUserData
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "cannot read capabilities: " + err.Error()
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	need := []struct {
		bit  uint
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_BPF, "CAP_BPF"},
		// The AF_XDP sockets, the packet socket TCP's segments leave
		// through and the raw ICMP sockets.
		{unix.CAP_NET_RAW, "CAP_NET_RAW"}}
	if netns {
		need = append(need, struct {
			bit  uint
			name string
		}{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"})
	}
	var missing []string
	for _, c := range need {
		if !has(c.bit) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ")
	}
	return ""
}
