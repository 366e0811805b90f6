package daemon

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// seriesOf returns the lines of a /metrics body that carry label.
func seriesOf(body, label string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "#") && strings.Contains(l, label) {
			out = append(out, l)
		}
	}
	return out
}

// TestMetricsNamespaceSeriesGoAway: once an app namespace that had TCP
// connections is deleted (ctl ns del), /metrics has no series labelled
// with it: its TCP counters (retransmits, resets, refusals, corrupt fifos)
// go as its listeners' and sessions' do.
func TestMetricsNamespaceSeriesGoAway(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig), func(o *Config) { o.MetricsAddr = "127.0.0.1:0" })
	if err := d.AddNamespace("blue", 42, rig.B.Link, ""); err != nil {
		t.Fatal(err)
	}
	a := attach(t, d, app.Options{Name: "in-blue", Namespace: "blue", Secret: 42})
	kc, ac := kernelToApp(t, rig, a, 7100)
	if _, err := kc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	ac.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(ac, buf); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, d.metricsAddr)
	if len(seriesOf(body, `namespace="blue"`)) == 0 {
		t.Fatalf("no series of namespace blue while it has a TCP connection:\n%s", body)
	}
	// The peer closes first, then the app: nothing lingers.
	kc.Close()
	ac.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ac.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer's close: %v", err)
	}
	ac.Close()
	a.Close()
	waitFor(t, "the app's connection and the app gone", 15*time.Second, func() bool {
		return len(d.eng.TCPConns()) == 0 && len(d.layer.Apps()) == 0
	})
	if err := d.DelNamespace("blue"); err != nil {
		t.Fatal(err)
	}
	body = scrape(t, d.metricsAddr)
	if s := seriesOf(body, `namespace="blue"`); len(s) > 0 {
		t.Errorf("namespace blue deleted, /metrics still has its series:\n%s", strings.Join(s, "\n"))
	}
	if len(seriesOf(body, `namespace="default"`)) == 0 {
		t.Errorf("no series of the default namespace:\n%s", body)
	}
}
