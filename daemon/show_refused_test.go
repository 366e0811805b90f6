package daemon

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMaxShowsConfig: control.max_shows reaches the control server, and
// its refusals are in show stats and the metrics (api's TestShowSlots
// counts them; 0 here, where none is refused).
func TestMaxShowsConfig(t *testing.T) {
	d := startDaemon(t, func(c *Config) { c.Control.MaxShows = 2 })
	if d.srv.MaxShows != 2 {
		t.Errorf("control server's MaxShows %d, want 2 from control.max_shows", d.srv.MaxShows)
	}
	doc, err := show(t, d.Socket(), "stats")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Control map[string]json.RawMessage `json:"control"`
	}
	if err := json.Unmarshal(doc, &st); err != nil {
		t.Fatal(err)
	}
	if v, ok := st.Control["shows_refused"]; !ok || string(v) != "0" {
		t.Errorf("show stats: control.shows_refused %s (present %v), want 0", v, ok)
	}
	rec := httptest.NewRecorder()
	d.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics: status %d", rec.Code)
	}
	if v := metric(t, rec.Body.String(), "xsessiond_control_shows_refused_total"); v != 0 {
		t.Errorf("xsessiond_control_shows_refused_total %v, want 0", v)
	}
}
