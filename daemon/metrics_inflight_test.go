package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestMetricsScrapesBounded: while maxScrapes scrapes wait for the
// daemon's lock (held here as a long control-plane call holds it), one
// more is answered 503 at once rather than queue behind them; once the
// lock is free, every waiting scrape is served.
func TestMetricsScrapesBounded(t *testing.T) {
	d := startDaemon(t)
	h := d.metricsHandler()
	d.mu.Lock()
	codes := make(chan int, maxScrapes)
	for range maxScrapes {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			codes <- rec.Code
		}()
	}
	time.Sleep(200 * time.Millisecond) // they wait in the collector
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		d.mu.Unlock()
		<-done
		t.Fatalf("a scrape past %d waited for the lock (answered %d after it)", maxScrapes, rec.Code)
	}
	d.mu.Unlock()
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a scrape past %d: %d, want 503", maxScrapes, rec.Code)
	}
	for range maxScrapes {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("a waiting scrape: %d, want 200", c)
		}
	}
}
