package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// metric returns the value of the sample whose line starts with prefix.
func metric(t *testing.T, body, prefix string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[len(prefix):]), 64)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			return v
		}
	}
	t.Fatalf("no sample %s in:\n%s", prefix, body)
	return 0
}

func TestMetrics(t *testing.T) {
	d := startDaemon(t, func(o *Config) { o.MetricsAddr = "127.0.0.1:0" })
	a := attach(t, d, app.Options{Name: "srv"})
	b := attach(t, d, app.Options{Name: "cli"})
	ln, err := a.Listen("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = sc
	// Queue data the server does not read: it shows as fifo fill.
	for range 10 {
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	// A global drop rule refuses three connects: three hits.
	id, err := d.layer.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		Action: sessions.RuleDrop, Tag: "block"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := b.Dial(ctx, "udp://192.0.2.1:53"); !errors.Is(err, flow.ErrFiltered) {
			t.Fatalf("dial through a drop rule: %v", err)
		}
	}
	body := scrape(t, d.metricsAddr)
	if v := metric(t, body, fmt.Sprintf(`xsessiond_rule_hits_total{action="drop",id="%d",tag="block"}`, id)); v != 3 {
		t.Errorf("rule hits %v", v)
	}
	if v := metric(t, body, "xsessiond_apps"); v != 2 {
		t.Errorf("apps %v", v)
	}
	if v := metric(t, body, `xsessiond_sessions{namespace="default",state="cut-through"}`); v != 2 {
		t.Errorf("cut-through sessions %v", v)
	}
	if v := metric(t, body, `xsessiond_listeners{namespace="default",table="global"}`); v != 1 {
		t.Errorf("global listeners %v", v)
	}
	// The server's rx fifo holds the ten datagrams (48-byte header + 104
	// bytes each).
	re := regexp.MustCompile(`xsessiond_fifo_used_bytes\{app="1",dir="rx",name="srv"\} (\d+)`)
	m := re.FindStringSubmatch(body)
	if m == nil || m[1] != "1520" {
		t.Errorf("server rx fifo fill: %v\n%s", m, body)
	}
	// The bytes of the cut-through fifo count once: under the server,
	// which reads them, not again as the client's tx.
	var total float64
	for _, m := range regexp.MustCompile(`(?m)^xsessiond_fifo_used_bytes\{[^}]*\} (\d+)$`).FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		total += v
	}
	if total != 1520 {
		t.Errorf("fifo bytes summed over apps: %v, want 1520 (counted once)\n%s", total, body)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds", "xsessiond_build_info"} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("no %s in the metrics", name)
		}
	}
	if !regexp.MustCompile(`xsessiond_build_info\{goversion="go[^"]+",version="dev"\} 1`).MatchString(body) {
		t.Errorf("build info:\n%s", body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
