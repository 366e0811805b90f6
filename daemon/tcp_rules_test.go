package daemon

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// serveTag answers every connection of ln with tag, then closes it.
func serveTag(ln net.Listener, tag string) {
	serveEach(ln, func(c net.Conn) { _, _ = c.Write([]byte(tag)) })
}

// TestTCPRulesOnTheWire: global rules act on the first segment of a
// connection from the wire. An app listens on B's port 7650. A drop rule
// for A's address leaves A's connects unanswered and counts their SYNs;
// deleted by id, connects reach the listener again; a forward rule to an
// app with no listener that serves the connection is as if it did not
// match (two apps cannot listen on one TCP port and family: the port is
// held in the kernel); a local-scope drop rule never touches wire traffic.
func TestTCPRulesOnTheWire(t *testing.T) {
	rig, d := tcpRig(t)
	exact := attach(t, d, app.Options{Name: "exact"})
	other := attach(t, d, app.Options{Name: "other"})
	le, err := exact.Listen("tcp://" + rig.B.IPv4.String() + ":7650")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Close()
	if _, err := other.Listen("tcp://0.0.0.0:7650"); err == nil {
		t.Fatal("a second app listened on the same TCP port")
	}
	go serveTag(le, "exact")
	dst := netip.AddrPortFrom(rig.B.IPv4, 7650)
	connect := func(timeout time.Duration) (string, error) {
		var got string
		err := rig.A.Do(func() error {
			c, err := net.DialTimeout("tcp", dst.String(), timeout)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			got = string(b)
			return err
		})
		return got, err
	}
	if got, err := connect(5 * time.Second); err != nil || got != "exact" {
		t.Fatalf("before any rule: %q, %v", got, err)
	}
	fromA := netip.PrefixFrom(rig.A.IPv4, 32)
	hits := func(id uint32) uint64 {
		for _, ri := range d.layer.Rules() {
			if ri.ID == id {
				return ri.Hits
			}
		}
		t.Fatalf("rule %d not listed", id)
		return 0
	}
	ruleDrops := func() uint64 { return d.Engine().Stats().Totals.Drops["rule-drop"] }

	drops0 := ruleDrops()
	drop, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportTCP, Remote: fromA, LocalPort: 7650, Action: sessions.RuleDrop, Tag: "block-a"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := connect(1500 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("drop rule: connect gave %q, %v; want a timeout", got, err)
	}
	// The first SYN and the kernel's retransmission after a second.
	waitFor(t, "the dropped SYNs to be counted", 5*time.Second, func() bool { return hits(drop) >= 2 && ruleDrops()-drops0 >= 2 })
	if h, n := hits(drop), ruleDrops()-drops0; h != n {
		t.Fatalf("drop rule: %d hits, %d rule drops", h, n)
	}
	if err := d.layer.DelRule(drop); err != nil {
		t.Fatal(err)
	}
	if got, err := connect(5 * time.Second); err != nil || got != "exact" {
		t.Fatalf("drop rule deleted: %q, %v", got, err)
	}

	fwd, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportTCP, Remote: fromA, Action: sessions.RuleForward, App: sessions.AppID(other.Index())})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got, err := connect(5 * time.Second); err != nil || got != "exact" {
			t.Fatalf("forward rule to an app without a listener, connect %d: %q, %v", i, got, err)
		}
	}
	if h := hits(fwd); h != 0 {
		t.Fatalf("forward rule without a listener: %d hits, want 0", h)
	}
	if err := d.layer.DelRule(fwd); err != nil {
		t.Fatal(err)
	}

	drops0 = ruleDrops()
	local, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportTCP, Remote: fromA, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := connect(5 * time.Second); err != nil || got != "exact" {
		t.Fatalf("local rule: %q, %v", got, err)
	}
	if h, n := hits(local), ruleDrops()-drops0; h != 0 || n != 0 {
		t.Fatalf("local rule: %d hits, %d rule drops; want none", h, n)
	}
}
