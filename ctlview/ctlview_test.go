package ctlview

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
)

func TestFilterKeepsOneAppsRows(t *testing.T) {
	doc, err := json.Marshal([]daemon.SessionView{{Handle: 1, App: 1, Namespace: "default"}, {Handle: 2, App: 2, Namespace: "blue"}})
	if err != nil {
		t.Fatal(err)
	}
	app := uint32(2)
	out, err := Filter{App: &app}.Apply(api.ShowSessions, doc)
	if err != nil {
		t.Fatal(err)
	}
	var rows []daemon.SessionView
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Handle != 2 {
		t.Fatalf("filter app 2 kept %+v", rows)
	}
	if _, err := (Filter{App: &app}).Apply(api.ShowStats, []byte("{}")); err == nil {
		t.Fatal("filtering stats: no error")
	}
}

func TestWriteTableRules(t *testing.T) {
	out := table(t, api.ShowRules, []daemon.RuleView{{ID: 3, Namespace: "default", Proto: "udp", Local: "0.0.0.0/0", LocalPort: 9000,
		Remote: "10.0.0.0/8", Action: "drop", Scope: "global", Hits: 7}})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("table:\n%s", out)
	}
	want := []string{"3", "default", "udp", "0.0.0.0/0", "9000", "10.0.0.0/8", "any", "drop", "-", "global", "-", "7"}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("row %q, want %q", got, want)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, api.ShowWhat(200), []byte("[]")); err == nil {
		t.Fatal("unknown document: no error")
	}
}

func TestParseRuleVPPOrder(t *testing.T) {
	words := strings.Fields("proto UDP 0.0.0.0/0 9000 10.0.0.0/8 0 action drop scope global appns blue tag t1")
	r, err := ParseRule(words, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Transport != flow.TransportUDP || r.Local != netip.MustParsePrefix("0.0.0.0/0") || r.LocalPort != 9000 ||
		r.Remote != netip.MustParsePrefix("10.0.0.0/8") || r.RemotePort != 0 || r.Action != api.ActionDrop ||
		r.Namespace != "blue" || r.Tag != "t1" {
		t.Fatalf("rule %+v", r)
	}
	if _, err := ParseRule(strings.Fields("proto udp local 0.0.0.0/0 9000"), true); err == nil {
		t.Fatal("rule add without action: no error")
	}
}

// TestParseRulePortMistyped: a word after a prefix that is neither a
// number nor one of the rule's words is a port mistyped, named as such;
// the port stays optional before the next word.
func TestParseRulePortMistyped(t *testing.T) {
	for _, c := range []struct{ words, want string }{
		{"proto udp local 0.0.0.0/0 abc action drop", `local port "abc": want 0 to 65535`},
		{"proto udp remote 10.0.0.0/8 nine action drop", `remote port "nine": want 0 to 65535`},
	} {
		if _, err := ParseRule(strings.Fields(c.words), true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.words, err, c.want)
		}
	}
	for _, w := range []string{
		"proto udp local 0.0.0.0/0 action drop",
		"proto udp local 0.0.0.0/0 remote 10.0.0.0/8 scope local action drop",
		"proto udp remote 10.0.0.0/8 appns blue action drop tag t",
	} {
		if _, err := ParseRule(strings.Fields(w), true); err != nil {
			t.Errorf("%s: %v", w, err)
		}
	}
}

func TestDrawTopRates(t *testing.T) {
	at := time.Unix(1000, 0)
	prev := &topSample{at: at}
	prev.stats.Queues = []daemon.QueueStats{{Queue: 0, RxPackets: 100}}
	cur := &topSample{at: at.Add(2 * time.Second)}
	cur.stats.Queues = []daemon.QueueStats{{Queue: 0, RxPackets: 2100, Dropped: 10, Drops: map[string]uint64{"no_session": 10}}}
	frame := string(drawTop(prev, cur, 10, 0, 0))
	var row []string
	for _, l := range strings.Split(frame, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "0" {
			row = f
		}
	}
	if want := "0 1000 0 0 5 no_session=5"; strings.Join(row, " ") != want {
		t.Fatalf("queue row %q, want %q; frame:\n%s", row, want, frame)
	}
	if head, _, _ := strings.Cut(frame, "\n"); strings.Contains(head, "(") {
		t.Fatalf("an interface that is up is marked: %q", head)
	}
	cur.stats.Interface, cur.stats.InterfaceState = "vb", "no-carrier"
	if f := string(drawTop(prev, cur, 10, 0, 0)); !strings.Contains(f, " on vb (NO-CARRIER) ") {
		t.Fatalf("the header does not mark an interface without carrier:\n%s", f)
	}
	clipped := string(drawTop(prev, cur, 10, 20, 3))
	lines := strings.Split(clipped, "\n")
	if len(lines) != 3 {
		t.Fatalf("clipped to 3 lines: %d", len(lines))
	}
	for _, l := range lines {
		if len(l) > 20 {
			t.Fatalf("line %q wider than 20", l)
		}
	}
}

func TestWriteTableSessionsTCP(t *testing.T) {
	out := table(t, api.ShowSessions, []daemon.SessionView{
		{Handle: 0x10, App: 1, Namespace: "default", State: "established", Transport: "tcp", TCPState: "CLOSE-WAIT",
			Local: "10.0.0.2:7000", Remote: "10.0.0.1:40000", Retransmits: 3, RxFifoSize: 64, TxFifoSize: 64,
			TCPRecvQ: 7, TCPSendQ: 9, TCPRTT: 212, TCPRTTVar: 1500, TCPCwnd: 10, Counters: counters(5, 1000, 4, 500)},
		{Handle: 0x11, App: 1, Namespace: "default", State: "established", Transport: "udp",
			Local: "10.0.0.2:9000", Remote: "10.0.0.1:9001", Counters: counters(1, 10, 1, 10)},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out)
	}
	want := [][]string{
		{"0x10", "1", "default", "established", "tcp", "CLOSE-WAIT", "10.0.0.2:7000", "10.0.0.1:40000", "0", "-", "0/64", "0/64", "7", "9", "0.212/1.500", "10", "5", "1000", "4", "500", "3", "0"},
		{"0x11", "1", "default", "established", "udp", "-", "10.0.0.2:9000", "10.0.0.1:9001", "0", "-", "-", "-", "-", "-", "-", "-", "1", "10", "1", "10", "-", "0"},
	}
	for i, w := range want {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("row %d %q, want %q", i, got, w)
		}
	}
}

// counters builds a session's datapath counters.
func counters(rxPkts, rxBytes, txPkts, txBytes uint64) daemon.Counters {
	return daemon.Counters{RxPackets: rxPkts, RxBytes: rxBytes, TxPackets: txPkts, TxBytes: txBytes, Drops: map[string]uint64{}}
}

// TestWriteTableAppsEnded: an app holding sessions its peers reset shows
// them beside its sessions.
func TestWriteTableAppsEnded(t *testing.T) {
	out := table(t, api.ShowApps, []daemon.AppView{
		{ID: 1, Name: "srv", Namespace: "default", Scope: "global", Sessions: 3, Ended: 2, FifoUsed: 10, FifoSize: 640},
		{ID: 2, Name: "cli", Namespace: "default", Scope: "global", Sessions: 1},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], " 3 (+2 ended, not closed) ") || strings.Contains(lines[2], "ended") {
		t.Fatalf("table:\n%s", out)
	}
}

// TestWriteTableStatsTCP: show stats' tcp rows name the connections,
// refusals and orphans, and the buffers against their bounds.
func TestWriteTableStatsTCP(t *testing.T) {
	out := table(t, api.ShowStats, daemon.StatsView{EngineStats: daemon.EngineStats{TCP: &daemon.TCPEngineStats{Connections: 5, Lingering: 9, TimeWaitOverflow: 10, Listeners: 2, Refused: 1,
		Orphans: 3, OrphansReset: 4, AbortedOnClose: 8, BufferBytes: 1000, BufferLimit: 8000, UserBufferLimit: 2000, BuffersClamped: 6, BufferGrowthsHeld: 7}}})
	for _, want := range []string{
		"5 connections, 9 lingering (10 ended early: tcp.max_time_wait), 2 listeners, 1 refused, 3 orphans (4 reset), 8 reset at their app's close",
		"1000 of 8000 bytes (a user's apps: 2000), 6 connections clamped, 7 growths held",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// The stats table says when the interface is not up, and what that means.
func TestWriteTableStatsInterfaceState(t *testing.T) {
	for state, want := range map[string]string{
		"":           "vb (ifindex 2, netns tb)\n",
		"up":         "vb (ifindex 2, netns tb)\n",
		"down":       "vb (ifindex 2, netns tb), down: nothing reaches the datapath until it is up and running\n",
		"no-carrier": "vb (ifindex 2, netns tb), no-carrier: nothing reaches the datapath until it is up and running\n",
		"gone":       "vb (ifindex 2, netns tb), gone: deleted or moved to another netns; nothing reaches the datapath\n",
	} {
		out := table(t, api.ShowStats, daemon.StatsView{Interface: "vb", IfIndex: 2, Netns: "tb", InterfaceState: state})
		if !strings.Contains(out, want) {
			t.Errorf("state %q: table lacks %q:\n%s", state, want, out)
		}
	}
}

// TestWriteTableListenersTCP: a TCP listener on the wire shows its accept
// queue (untaken of backlog, "?" for an app that does not mark what it
// takes) and its refusals; a UDP listener shows neither.
func TestWriteTableListenersTCP(t *testing.T) {
	out := table(t, api.ShowListeners, []daemon.ListenerView{
		{Handle: 0x1, App: 1, URI: "tcp://0.0.0.0:7000", Namespace: "default", Table: "global", RxFifoSize: 64,
			TCP:      &daemon.ListenerTCPView{Backlog: 4, Untaken: 4, Refused: map[string]uint64{"backlog": 12, "limit": 0}},
			Counters: counters(0, 0, 0, 0)},
		{Handle: 0x2, App: 2, URI: "tcp://0.0.0.0:7001", Namespace: "default", Table: "global", RxFifoSize: 64,
			TCP: &daemon.ListenerTCPView{Backlog: 1024, Untaken: -1, Refused: map[string]uint64{}}, Counters: counters(0, 0, 0, 0)},
		{Handle: 0x3, App: 1, URI: "udp://0.0.0.0:9000", Namespace: "default", Table: "global", RxFifoSize: 64,
			Counters: counters(5, 320, 0, 0)},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "ACCEPT Q") {
		t.Fatalf("table:\n%s", out)
	}
	want := []string{"4/4 backlog=12", "?/1024 0", "0 - -"}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[i+1]), " "); !strings.HasSuffix(got, w) {
			t.Errorf("row %d %q, want it to end %q", i, got, w)
		}
	}
}

// TestDrawTopListenerAcceptQueue: top shows a TCP listener's accept queue
// where a UDP listener's fifo is.
func TestDrawTopListenerAcceptQueue(t *testing.T) {
	at := time.Unix(1000, 0)
	prev, cur := &topSample{at: at}, &topSample{at: at.Add(time.Second)}
	cur.listeners = []daemon.ListenerView{{Handle: 0x1, App: 1, URI: "tcp://0.0.0.0:7000", Table: "global",
		TCP: &daemon.ListenerTCPView{Backlog: 4, Untaken: 3}, Counters: counters(0, 0, 0, 0)}}
	frame := string(drawTop(prev, cur, 10, 0, 0))
	for _, l := range strings.Split(frame, "\n") {
		if strings.Contains(l, "listen tcp://0.0.0.0:7000") {
			if !strings.Contains(l, "accept 3/4") {
				t.Fatalf("listener row %q has no accept queue", l)
			}
			return
		}
	}
	t.Fatalf("no listener row:\n%s", frame)
}

// table writes v, marshalled as the daemon sends it, as ctl shows what.
func table(t *testing.T, what api.ShowWhat, v any) string {
	t.Helper()
	doc, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, what, doc); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestWriteTableStatsCPU: the queues' table has a CPU column when workers
// are pinned, and none when no worker is.
func TestWriteTableStatsCPU(t *testing.T) {
	three := 3
	qs := []daemon.QueueStats{{Queue: 0, CPU: &three, RxPackets: 7}, {Queue: 1, RxPackets: 8}}
	out := table(t, api.ShowStats, daemon.StatsView{EngineStats: daemon.EngineStats{Queues: qs}})
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^QUEUE +CPU +RX `),
		regexp.MustCompile(`(?m)^0 +3 +7 `),
		regexp.MustCompile(`(?m)^1 +- +8 `),
		regexp.MustCompile(`(?m)^all +- +0 `),
	} {
		if !want.MatchString(out) {
			t.Errorf("table lacks %v:\n%s", want, out)
		}
	}
	qs[0].CPU = nil
	out = table(t, api.ShowStats, daemon.StatsView{EngineStats: daemon.EngineStats{Queues: qs}})
	if strings.Contains(out, "CPU") || !regexp.MustCompile(`(?m)^QUEUE +RX +TX `).MatchString(out) {
		t.Errorf("a CPU column with no worker pinned:\n%s", out)
	}
}

// TestDrawTopLingeringBesideItsHandlesSession: a connection lingering
// after its app closed it is listed beside the session that took its
// handle since; each row's rate is its own (the lingering row's counters
// were given to both, and the busy session showed its rate).
func TestDrawTopLingeringBesideItsHandlesSession(t *testing.T) {
	at := time.Unix(1000, 0)
	live := daemon.SessionView{Handle: 0x10, App: 1, Namespace: "default", State: "established", Transport: "tcp",
		Local: "10.0.0.2:7000", Remote: "10.0.0.1:40001"}
	old := daemon.SessionView{Handle: 0x10, App: 1, Namespace: "default", State: "lingering", Transport: "tcp",
		Local: "10.0.0.2:7000", Remote: "10.0.0.1:40000"}
	prev, cur := &topSample{at: at}, &topSample{at: at.Add(time.Second)}
	live.Counters, old.Counters = counters(1000, 0, 0, 0), counters(5, 0, 0, 0)
	prev.sessions = []daemon.SessionView{live, old}
	live.Counters, old.Counters = counters(2000, 0, 0, 0), counters(6, 0, 0, 0)
	cur.sessions = []daemon.SessionView{live, old}
	frame := string(drawTop(prev, cur, 10, 0, 0))
	rows := 0
	for _, l := range strings.Split(frame, "\n") {
		f := strings.Fields(l)
		switch {
		case strings.Contains(l, "10.0.0.1:40001"):
			rows++
			if !slices.Contains(f, "1000") {
				t.Errorf("the live session's row %q has not its 1000/s", l)
			}
		case strings.Contains(l, "10.0.0.1:40000"):
			rows++
			if slices.Contains(f, "1000") {
				t.Errorf("the lingering row %q has the live session's rate", l)
			}
		}
	}
	if rows != 2 {
		t.Fatalf("%d rows of the two connections:\n%s", rows, frame)
	}
}
