package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/daemon"
)

// TestRulesRig drives global session rules on the wire with the built
// binaries: the daemon on host B of the rig, the echo example on udp port
// 9000, a kernel UDP client on host A, and `xsessiond ctl rule` between
// them. A drop rule for A's address stops the echo and shows its drops in
// the rule's hits and in the stats; deleting it brings the echo back; a
// forward rule moves A's datagrams to a second echo app on the same port;
// a local-scope rule leaves the wire alone.
func TestRulesRig(t *testing.T) {
	r := startEchoRig(t)
	a := r.rig.A.IPv4.String()
	if _, back := r.echo(t, 20, 64); back < 20 {
		t.Fatalf("before any rule: %d of 20 echoes came back", back)
	}

	// A drop rule for host A.
	drop := r.addRule(t, "proto", "udp", "remote", a+"/32", "0", "action", "drop", "tag", "rig")
	const n = 10
	if back := r.probe(t, n); back != 0 {
		t.Fatalf("drop rule %d: %d of %d echoes came back", drop, back, n)
	}
	if h := r.ruleHits(t, drop); h < n {
		t.Fatalf("drop rule %d: %d hits, want at least %d", drop, h, n)
	}
	if d := r.ruleDrops(t); d < n {
		t.Fatalf("stats: %d rule drops after %d dropped datagrams", d, n)
	}
	if out, err := r.ctl("show", "rules"); err != nil || !regexp.MustCompile(`(?m)^`+strconv.Itoa(int(drop))+`\s.*\bdrop\b.*\brig\b`).MatchString(out) {
		t.Fatalf("show rules: %v\n%s", err, out)
	}
	if out, err := r.ctl("rule", "del", strconv.Itoa(int(drop))); err != nil {
		t.Fatalf("rule del %d: %v %s", drop, err, out)
	}
	if _, back := r.echo(t, 20, 64); back < 20 {
		t.Fatalf("after rule del: %d of 20 echoes came back", back)
	}
	hitsAfterDel := r.ruleDrops(t)

	// A second echo app on port 9000, bound to B's address: the normal
	// lookup prefers its exact bind to the first app's wildcard. A forward
	// rule to the first app moves A's datagrams back to it.
	_, echo := binaries(t)
	e2 := startProcess(t, echo, "--socket", r.sock, "--name", "udpecho2", "--listen", "udp://"+r.rig.B.IPv4.String()+":9000")
	m := regexp.MustCompile(`\(app (\d+)\)`).FindStringSubmatch(e2.waitLine(t, "echoing on", 10*time.Second))
	if m == nil {
		t.Fatal("udpecho2 did not say its app index")
	}
	app2, _ := strconv.Atoi(m[1])
	app1 := r.appNamed(t, "udpecho")
	if app1 == 0 || app1 == app2 {
		t.Fatalf("apps: udpecho %d, udpecho2 %d", app1, app2)
	}
	before := r.listenerRx(t)
	if _, back := r.echo(t, 20, 64); back < 20 {
		t.Fatalf("two apps: %d of 20 echoes came back", back)
	}
	mid := r.listenerRx(t)
	if got1, got2 := mid[app1]-before[app1], mid[app2]-before[app2]; got1 != 0 || got2 < 20 {
		t.Fatalf("without a rule: udpecho received %d, udpecho2 %d of 20", got1, got2)
	}
	fwd := r.addRule(t, "proto", "udp", "remote", a+"/32", "0", "action", "forward", "app", strconv.Itoa(app1))
	if _, back := r.echo(t, 20, 64); back < 20 {
		t.Fatalf("forward rule %d: %d of 20 echoes came back", fwd, back)
	}
	after := r.listenerRx(t)
	if got1, got2 := after[app1]-mid[app1], after[app2]-mid[app2]; got1 < 20 || got2 != 0 {
		t.Fatalf("forward rule %d to app %d: udpecho received %d, udpecho2 %d of 20", fwd, app1, got1, got2)
	}
	if h := r.ruleHits(t, fwd); h < 20 {
		t.Fatalf("forward rule %d: %d hits, want at least 20", fwd, h)
	}
	if out, err := r.ctl("rule", "del", strconv.Itoa(int(fwd))); err != nil {
		t.Fatalf("rule del %d: %v %s", fwd, err, out)
	}

	// A local-scope drop rule for A: only connects of local-scope apps
	// consult it, never a datagram from the wire.
	local := r.addRule(t, "proto", "udp", "remote", a+"/32", "0", "action", "drop", "scope", "local")
	if _, back := r.echo(t, 20, 64); back < 20 {
		t.Fatalf("local-scope drop rule %d: %d of 20 echoes came back", local, back)
	}
	if h := r.ruleHits(t, local); h != 0 {
		t.Fatalf("local-scope drop rule %d: %d hits from the wire", local, h)
	}
	if d := r.ruleDrops(t); d != hitsAfterDel {
		t.Fatalf("local-scope drop rule: rule drops went from %d to %d", hitsAfterDel, d)
	}
}

var ruleAdded = regexp.MustCompile(`^rule (\d+) added\n$`)

// addRule runs ctl rule add with words and returns the id it printed.
func (r *echoRig) addRule(t *testing.T, words ...string) uint32 {
	t.Helper()
	out, err := r.ctl(append([]string{"rule", "add"}, words...)...)
	if err != nil {
		t.Fatalf("rule add %q: %v %s", words, err, out)
	}
	m := ruleAdded.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("rule add %q printed %q", words, out)
	}
	id, _ := strconv.ParseUint(m[1], 10, 32)
	return uint32(id)
}

// showJSON runs ctl show what --json and decodes it into v.
func (r *echoRig) showJSON(t *testing.T, what string, v any) {
	t.Helper()
	out, err := r.ctl("show", what, "--json")
	if err != nil {
		t.Fatalf("show %s: %v %s", what, err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("show %s --json: %v\n%s", what, err, out)
	}
}

// ruleHits returns the hits ctl show rules lists for rule id.
func (r *echoRig) ruleHits(t *testing.T, id uint32) uint64 {
	t.Helper()
	var rules []daemon.RuleView
	r.showJSON(t, "rules", &rules)
	for _, ru := range rules {
		if ru.ID == id {
			return ru.Hits
		}
	}
	t.Fatalf("rule %d not listed: %+v", id, rules)
	return 0
}

// ruleDrops returns the datagrams the datapath dropped by rule, as ctl
// show stats counts them.
func (r *echoRig) ruleDrops(t *testing.T) uint64 {
	t.Helper()
	var st daemon.StatsView
	r.showJSON(t, "stats", &st)
	return st.Totals.Drops["rule_drop"]
}

// appNamed returns the id of the app called name (0: none).
func (r *echoRig) appNamed(t *testing.T, name string) int {
	t.Helper()
	var apps []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	r.showJSON(t, "apps", &apps)
	for _, a := range apps {
		if a.Name == name {
			return a.ID
		}
	}
	return 0
}

// listenerRx returns the datagrams each app's udp listeners received.
func (r *echoRig) listenerRx(t *testing.T) map[int]uint64 {
	t.Helper()
	var ls []daemon.ListenerView
	r.showJSON(t, "listeners", &ls)
	rx := map[int]uint64{}
	for _, l := range ls {
		rx[int(l.App)] += l.RxPackets
	}
	return rx
}

// probe sends n datagrams from a kernel socket on host A, one at a time,
// and counts the echoes that come back within 300 ms of each.
func (r *echoRig) probe(t *testing.T, n int) (back int) {
	t.Helper()
	err := r.rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.rig.B.IPv4, 9000)))
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := range n {
			if _, err := fmt.Fprintf(c, "probe %d", i); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(buf); err == nil {
				back++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return back
}
