package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"github.com/xsessiond/xsessiond/sessions"
)

// ctlConn is one control connection that shows and clears, as ctl does,
// kept open so that its own end is not one of the control socket's
// disconnects.
type ctlConn struct {
	t  *testing.T
	cl *api.Client
}

func dialCtl(t *testing.T, d *Daemon) ctlConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "clear-stats"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return ctlConn{t, cl}
}

// show decodes the JSON document of ctl show what into v and returns it
// decoded as a tree too.
func (c ctlConn) show(what string, v any) any {
	c.t.Helper()
	w, err := api.ParseShowWhat(what)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, fds, err := c.cl.Call(ctx, &api.Show{What: w})
	api.CloseFDs(fds)
	if err != nil {
		c.t.Fatalf("show %s: %v", what, err)
	}
	sr, ok := m.(*api.ShowReply)
	if !ok {
		c.t.Fatalf("show %s: the daemon answered %v", what, m.Type())
	}
	if v != nil {
		if err := json.Unmarshal(sr.JSON, v); err != nil {
			c.t.Fatalf("show %s: %v", what, err)
		}
	}
	var tree any
	if err := json.Unmarshal(sr.JSON, &tree); err != nil {
		c.t.Fatalf("show %s: %v", what, err)
	}
	return tree
}

func (c ctlConn) clear() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, fds, err := c.cl.Call(ctx, &api.StatsClear{}); err != nil {
		c.t.Fatalf("clear stats: %v", err)
	} else {
		api.CloseFDs(fds)
	}
}

// showGauges are the numbers of the show documents that are not counters:
// sizes, fill, identities, settings and gauges, which clear stats leaves.
var showGauges = []string{
	// stats
	"ifindex", "uptime_seconds", "cleared_seconds_ago", "apps", "connections", "listeners", "sessions", "namespaces",
	"rules", "workers", "queue", "worker", "cpu", "reasm_in_flight", "reasm_held", "syn_queued", "entries", "last_seq",
	"lingering", "buffer_bytes", "buffer_limit_bytes", "user_buffer_limit_bytes", "orphans",
	// sessions, listeners
	"app", "fib", "rx_fifo_used_bytes", "rx_fifo_size_bytes", "tx_fifo_used_bytes", "tx_fifo_size_bytes",
	"tcp_recv_q_bytes", "tcp_send_q_bytes", "tcp_rcv_buf_bytes", "tcp_rtt_us", "tcp_rtt_var_us", "tcp_cwnd",
	"backlog", "untaken",
	// rules
	"id", "local_port", "remote_port",
	// apps
	"client", "ended_sessions", "rx_fifo_size", "tx_fifo_size", "events_waiting", "pid", "uid", "gid",
	"fifo_used_bytes", "fifo_size_bytes",
}

// counters flattens a show document into its counters by path: the
// numbers whose key is not among showGauges, a list's objects named by
// their handle, id or queue.
func counters(doc any) map[string]float64 {
	out := map[string]float64{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if _, ok := e.(float64); ok && slices.Contains(showGauges, k) {
					continue
				}
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range v {
				name := strconv.Itoa(i)
				if o, ok := e.(map[string]any); ok {
					for _, k := range []string{"handle", "id", "queue"} {
						if id, ok := o[k]; ok {
							name = fmt.Sprint(k, "=", id)
							for _, a := range []string{"uri", "local", "remote"} {
								if v, ok := o[a].(string); ok {
									name += " " + v
								}
							}
							break
						}
					}
				}
				walk(path+"["+name+"]", e)
			}
		case float64:
			out[path] = v
		}
	}
	walk("", doc)
	return out
}

// dropIngress has host h drop every frame it receives, until the
// returned func lets them through again.
func dropIngress(t *testing.T, h *nstest.Host) func() {
	t.Helper()
	tcFilter(t, h, "drop", asm.Instructions{asm.LoadImm(asm.R0, int64(netlink.TC_ACT_SHOT), asm.DWord), asm.Return()},
		netlink.HANDLE_MIN_INGRESS)
	return func() {
		nh, err := netlink.NewHandleAt(h.NS)
		if err != nil {
			t.Fatal(err)
		}
		defer nh.Close()
		q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: h.IfIndex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
		if err := nh.QdiscDel(q); err != nil {
			t.Fatalf("delete clsact on %s: %v", h.Link, err)
		}
	}
}

// metricCounters returns the samples of the counters in a /metrics body,
// by series.
func metricCounters(body string) map[string]float64 {
	isCounter := map[string]bool{}
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			isCounter[f[2]] = f[3] == "counter"
			continue
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		series := l[:i]
		name, _, _ := strings.Cut(series, "{")
		if !isCounter[name] {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[series] = v
		}
	}
	return out
}

// TestClearStatsEveryCounter: after ctl clear stats, every counter ctl show
// (and so ctl top) reports starts from zero: the queues, the XDP program's,
// the UDP listeners', the TCP sessions' segments, bytes and retransmits,
// the TCP listeners' refusals, the rules' hits, the kicks, the stack's
// refusals and the control socket's disconnects; traffic after the clear
// counts again, from zero. The gauges stay, and the metrics keep counting
// (none goes back).
func TestClearStatsEveryCounter(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) {
		o.MetricsAddr = "127.0.0.1:0"
		o.Datapath.TCP.Stack.MaxConnsPerOwner = 1 // a second connection of an app is refused (limit)
	})
	ctl := dialCtl(t, d)
	srv := attach(t, d, app.Options{Name: "srv"})
	lim := attach(t, d, app.Options{Name: "lim"})

	// UDP: a listener echoing a kernel peer's datagrams.
	pc, err := srv.ListenPacket("udp://0.0.0.0:7610")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go echoPackets(pc)
	kudp := kernelUDP(t, rig.A, "udp4", ":0")
	udpDst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.B.IPv4, 7610))
	udpEcho := func(n int) {
		t.Helper()
		b := make([]byte, 100)
		for i := range n {
			if _, err := kudp.WriteTo(b, udpDst); err != nil {
				t.Fatal(err)
			}
			if _, _, err := recvWithin(kudp, b); err != nil {
				t.Fatalf("udp echo %d: %v", i, err)
			}
		}
	}

	// TCP: a kernel client's connection to srv, and retransmits of srv's
	// data while host A drops what it receives.
	kc, ac := kernelToApp(t, rig, srv, 7620)
	remote := kc.LocalAddr().String()
	_ = kc.SetDeadline(time.Now().Add(60 * time.Second))
	_ = ac.SetDeadline(time.Now().Add(60 * time.Second))
	tcpIn := func(n int) { // kernel -> app
		t.Helper()
		if _, err := kc.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ac, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	retransmit := func() {
		t.Helper()
		before, _ := tcpSession(d, remote)
		undrop := dropIngress(t, rig.A)
		if _, err := ac.Write(make([]byte, 100)); err != nil {
			undrop()
			t.Fatal(err)
		}
		for end := time.Now().Add(10 * time.Second); ; {
			if s, _ := tcpSession(d, remote); s.Retransmits > before.Retransmits {
				break
			}
			if time.Now().After(end) {
				undrop()
				t.Fatal("no retransmit while the peer dropped everything")
			}
			time.Sleep(10 * time.Millisecond)
		}
		undrop()
		if _, err := io.ReadFull(kc, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}

	// TCP refused: lim may hold one connection, a second is refused.
	listenEcho(t, lim, "tcp://0.0.0.0:7621")
	limDst := netip.AddrPortFrom(rig.B.IPv4, 7621).String()
	kernelDial := func() (net.Conn, error) {
		var c net.Conn
		err := rig.A.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", limDst, 5*time.Second)
			return err
		})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	held, err := kernelDial()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(held, make([]byte, 1)); err != nil {
		t.Fatalf("lim's one connection: %v", err)
	}
	limRefused := func() uint64 {
		return listenerTCP(t, d, "tcp://0.0.0.0:7621").Refused["limit"]
	}
	refuse := func() {
		t.Helper()
		before := limRefused()
		_, _ = kernelDial() // reset, as it connects or once connected
		waitFor(t, "a refusal of the limit", 5*time.Second, func() bool { return limRefused() > before })
	}

	// A rule: connects it drops are its hits.
	ruleID, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		Action: sessions.RuleDrop, Tag: "block"})
	if err != nil {
		t.Fatal(err)
	}
	hit := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for range n {
			if _, err := srv.Dial(ctx, "udp://192.0.2.1:53"); !errors.Is(err, flow.ErrFiltered) {
				t.Fatalf("dial through a drop rule: %v", err)
			}
		}
	}

	// The control socket: an app that attaches and goes.
	disconnects := func() uint64 {
		var sv StatsView
		ctl.show("stats", &sv)
		var n uint64
		for _, v := range sv.Control.Disconnects {
			n += v
		}
		return n
	}
	attachAndGo := func() {
		t.Helper()
		a := attach(t, d, app.Options{Name: "brief"})
		a.Close()
	}

	// Before the clear: every group counts.
	udpEcho(10)
	tcpIn(1000)
	retransmit()
	refuse()
	hit(3)
	attachAndGo()
	waitFor(t, "the brief app's disconnect", 5*time.Second, func() bool { return disconnects() > 0 })
	// Let the traffic settle: the TCP segments stop moving.
	var last SessionView
	waitFor(t, "the TCP session to settle", 10*time.Second, func() bool {
		s, _ := tcpSession(d, remote)
		same := s.TCPSendQ == 0 && s.RxPackets == last.RxPackets && s.TxPackets == last.TxPackets
		last = s
		if !same {
			time.Sleep(200 * time.Millisecond)
		}
		return same
	})

	type docs struct {
		stats     StatsView
		sessions  []SessionView
		listeners []ListenerView
		rules     []RuleView
		apps      []AppView
		counters  map[string]float64
	}
	read := func() docs {
		t.Helper()
		var o docs
		o.counters = map[string]float64{}
		for what, v := range map[string]any{"stats": &o.stats, "sessions": &o.sessions, "listeners": &o.listeners,
			"rules": &o.rules, "apps": &o.apps} {
			for k, n := range counters(ctl.show(what, v)) {
				o.counters[what+k] = n
			}
		}
		return o
	}
	session := func(o docs) SessionView {
		t.Helper()
		for _, s := range o.sessions {
			if s.Transport == "tcp" && s.Remote == remote {
				return s
			}
		}
		t.Fatalf("no TCP session from %s", remote)
		return SessionView{}
	}
	listener := func(o docs, uri string) ListenerView {
		t.Helper()
		for _, l := range o.listeners {
			if l.URI == uri {
				return l
			}
		}
		t.Fatalf("no listener %s", uri)
		return ListenerView{}
	}
	rule := func(o docs) RuleView {
		t.Helper()
		for _, r := range o.rules {
			if r.ID == ruleID {
				return r
			}
		}
		t.Fatalf("no rule %d", ruleID)
		return RuleView{}
	}
	kicks := func(o docs) uint64 {
		if k := o.stats.Kicks; k != nil {
			return k.Wakes + k.Spurious + k.Muted
		}
		return 0
	}
	sum := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}

	before := read()
	metricsBefore := metricCounters(scrape(t, d.MetricsAddr()))
	// What moved, to see it reset.
	s0, u0, l0 := session(before), listener(before, "udp://0.0.0.0:7610"), listener(before, "tcp://0.0.0.0:7621")
	if s0.RxBytes < 1000 || s0.TxBytes < 100 || s0.RxPackets == 0 || s0.TxPackets == 0 || s0.Retransmits == 0 {
		t.Fatalf("TCP session before the clear: %+v", s0)
	}
	if u0.RxPackets < 10 || u0.TxPackets < 10 {
		t.Fatalf("UDP listener before the clear: %+v", u0.Counters)
	}
	if l0.TCP == nil || l0.TCP.Refused["limit"] == 0 || before.stats.TCP == nil || before.stats.TCP.Refused == 0 {
		t.Fatalf("refusals before the clear: listener %+v, stack %+v", l0.TCP, before.stats.TCP)
	}
	if rule(before).Hits != 3 || kicks(before) == 0 || sum(before.stats.Control.Disconnects) == 0 || before.stats.Mirror.Applied == 0 {
		t.Fatalf("before the clear: rule hits %d, kicks %+v, control %+v, mirror %+v", rule(before).Hits, before.stats.Kicks,
			before.stats.Control, before.stats.Mirror)
	}

	ctl.clear()
	after := read()
	metricsAfter := metricCounters(scrape(t, d.MetricsAddr()))

	// Every counter that had counted is below what it was: it counts from
	// the clear. Some go on by themselves, a little, and may count 1
	// again between the clear and the read: the workers' loops and
	// sleeps (the queues' and their totals' counts), the XDP program's
	// and the kernel path's counts of what the kernels send on their own
	// (ARP, neighbour discovery), the mirror's checks and netlink events
	// and the resolver's lookups they start. Those are held below what
	// they were from 2; every other counter (the sessions', the
	// listeners', the rules', the apps', the kicks, the stack's and the
	// control socket's), which only the traffic above moves, from 1.
	movesByItself := func(k string) bool {
		for _, p := range []string{"stats.queues[", "stats.totals.", "stats.xdp.", "stats.kernel_rx", "stats.mirror.", "stats.resolver."} {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
		return false
	}
	ones := 0
	for k, v := range before.counters {
		if v == 0 || v == 1 && movesByItself(k) {
			continue
		}
		if v == 1 {
			ones++
		}
		if after.counters[k] >= v {
			t.Errorf("%s: %v after clear stats, %v before", k, after.counters[k], v)
		}
	}
	// Those at 1: lim's one connection's byte each way, its listener's
	// and the stack's refusal, the brief app's hangup at least.
	if ones < 5 {
		t.Errorf("%d counters at 1 before the clear checked, want at least 5", ones)
	}
	// Those of the traffic above are zero: nothing moved them since.
	s1, u1, l1 := session(after), listener(after, "udp://0.0.0.0:7610"), listener(after, "tcp://0.0.0.0:7621")
	if s1.RxBytes != 0 || s1.TxBytes != 0 || s1.RxPackets != 0 || s1.TxPackets != 0 || s1.Retransmits != 0 {
		t.Errorf("TCP session after clear stats: rx %d segments %d bytes, tx %d segments %d bytes, %d retransmits; want 0",
			s1.RxPackets, s1.RxBytes, s1.TxPackets, s1.TxBytes, s1.Retransmits)
	}
	if s1.TCPState != "ESTABLISHED" || s1.TCPCwnd == 0 {
		t.Errorf("TCP session after clear stats: state %q, cwnd %d: gauges are not reset", s1.TCPState, s1.TCPCwnd)
	}
	if u1.RxPackets != 0 || u1.TxPackets != 0 || u1.RxBytes != 0 || u1.TxBytes != 0 {
		t.Errorf("UDP listener after clear stats: %+v", u1.Counters)
	}
	if l1.TCP == nil || sum(l1.TCP.Refused) != 0 || len(l1.TCP.Refused) != len(l0.TCP.Refused) || l1.TCP.Backlog != l0.TCP.Backlog {
		t.Errorf("TCP listener after clear stats: %+v; want every reason at 0, the backlog kept", l1.TCP)
	}
	if after.stats.TCP == nil || after.stats.TCP.Refused != 0 || after.stats.TCP.Connections != before.stats.TCP.Connections ||
		after.stats.TCP.BufferBytes == 0 {
		t.Errorf("tcp after clear stats: %+v; before %+v", after.stats.TCP, before.stats.TCP)
	}
	if h := rule(after).Hits; h != 0 {
		t.Errorf("rule hits after clear stats: %d", h)
	}
	if kicks(after) != 0 {
		t.Errorf("kicks after clear stats: %+v", after.stats.Kicks)
	}
	if n := sum(after.stats.Control.Disconnects) + sum(after.stats.Control.Dropped); n != 0 ||
		len(after.stats.Control.Dropped) != len(before.stats.Control.Dropped) {
		t.Errorf("control after clear stats: %+v", after.stats.Control)
	}
	if after.stats.Sessions != before.stats.Sessions || after.stats.Listeners != before.stats.Listeners || after.stats.Apps != before.stats.Apps {
		t.Errorf("table sizes after clear stats: %d sessions, %d listeners, %d apps; before %d, %d, %d", after.stats.Sessions,
			after.stats.Listeners, after.stats.Apps, before.stats.Sessions, before.stats.Listeners, before.stats.Apps)
	}
	// The metrics keep counting.
	for k, v := range metricsBefore {
		if a, ok := metricsAfter[k]; ok && a < v {
			t.Errorf("metric %s went back across clear stats: %v, then %v", k, v, a)
		}
	}
	hitsMetric := fmt.Sprintf(`xsessiond_rule_hits_total{action="drop",id="%d",tag="block"}`, ruleID)
	if metricsAfter[hitsMetric] != 3 {
		t.Errorf("%s after clear stats: %v, want 3", hitsMetric, metricsAfter[hitsMetric])
	}

	// Traffic after the clear counts, from zero.
	udpEcho(5)
	tcpIn(300)
	retransmit()
	refuse()
	hit(2)
	attachAndGo()
	waitFor(t, "the brief app's second disconnect", 5*time.Second, func() bool { return disconnects() == 1 })
	var s2 SessionView
	waitFor(t, "the TCP session's counts", 10*time.Second, func() bool {
		s2 = session(read())
		return s2.RxBytes == 300 && s2.TxBytes == 100 && s2.TCPSendQ == 0
	})
	again := read()
	u2, l2 := listener(again, "udp://0.0.0.0:7610"), listener(again, "tcp://0.0.0.0:7621")
	if s2.RxPackets == 0 || s2.TxPackets == 0 || s2.Retransmits == 0 {
		t.Errorf("TCP session after the clear and more traffic: %+v", s2)
	}
	if u2.RxPackets != 5 || u2.TxPackets != 5 || u2.RxBytes != 500 || u2.TxBytes != 500 {
		t.Errorf("UDP listener after the clear and 5 echoes: %+v", u2.Counters)
	}
	if l2.TCP.Refused["limit"] != 1 || again.stats.TCP.Refused != 1 {
		t.Errorf("refusals after the clear and one more: listener %v, stack %d; want 1", l2.TCP.Refused, again.stats.TCP.Refused)
	}
	if h := rule(again).Hits; h != 2 {
		t.Errorf("rule hits after the clear and 2 more: %d", h)
	}
	// An app kicks a worker only when the worker sleeps: one kept busy by
	// the traffic above may have taken it all awake, and an echo's reply
	// may come while the worker that delivered its request is still
	// awake. A datagram the app sends of its own after an idle spell,
	// which the worker sleeps through, is kicked.
	toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, uint16(kudp.LocalAddr().(*net.UDPAddr).Port)))
	k := read()
	for end := time.Now().Add(5 * time.Second); kicks(k) == 0 && time.Now().Before(end); k = read() {
		time.Sleep(100 * time.Millisecond)
		b := make([]byte, 100)
		if _, err := pc.WriteTo(b, toA); err != nil {
			t.Fatal(err)
		}
		if _, _, err := recvWithin(kudp, b); err != nil {
			t.Fatalf("a datagram from the app: %v", err)
		}
	}
	if kicks(k) == 0 {
		t.Errorf("no kicks counted after the clear and more traffic: %+v", k.stats.Kicks)
	}
	if again.stats.Totals.RxPackets == 0 || again.stats.XDP["redirect"] == 0 ||
		again.stats.Totals.RxPackets >= before.stats.Totals.RxPackets {
		t.Errorf("queues after the clear and more traffic: rx %d (before the clear %d), xdp %v", again.stats.Totals.RxPackets,
			before.stats.Totals.RxPackets, again.stats.XDP)
	}
	metricsAgain := metricCounters(scrape(t, d.MetricsAddr()))
	if v := metricsAgain[hitsMetric]; v != 5 {
		t.Errorf("%s after 2 more hits: %v, want 5", hitsMetric, v)
	}
	for _, k := range []string{`xsessiond_tcp_refused_total{namespace="default",reason="limit"}`, `xsessiond_queue_rx_packets_total{queue="0"}`} {
		if metricsAgain[k] <= metricsBefore[k] {
			t.Errorf("%s: %v before the clear, %v after more traffic", k, metricsBefore[k], metricsAgain[k])
		}
	}
}
