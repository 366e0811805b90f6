package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDashboard checks that the Grafana dashboard parses and that every
// metric it queries is one the daemon documents (docs/cli.md), so a
// renamed metric cannot leave the dashboard empty unnoticed.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`\b(xsessiond_[a-z_]+|process_[a-z_]+|go_[a-z_]+)\b`)
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			ms := name.FindAllString(q.Expr, -1)
			if len(ms) == 0 {
				t.Errorf("panel %q: %q queries no metric", p.Title, q.Expr)
			}
			for _, m := range ms {
				if strings.HasPrefix(m, "xsessiond_") && !strings.Contains(string(doc), "`"+m+"`") {
					t.Errorf("panel %q queries %s, which docs/cli.md does not list", p.Title, m)
				}
			}
		}
	}
}
