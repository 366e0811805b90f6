package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// TestShowSessionsScale: with 10,000 cut-through sessions show sessions
// answers every one of them and the metrics have no series per session;
// with over 32,000, whose JSON is more than a client reassembles
// (api.MaxReassembled), a show of the whole table answers an error that
// says so and what still answers, a page at a time (api.Client.ShowAll, as
// ctl and top ask) gives every session once, and the other shows and the
// metrics still answer.
func TestShowSessionsScale(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newClient := func(name string) *api.Client { return attachRawClient(t, ctx, d.Socket(), name) }
	cutThroughServer(t, ctx, d.Socket())
	const perApp = 2500 // an app opens at most 4,096 cut-through sessions
	for i := range 2 {
		connectCutThrough(t, ctx, newClient("client"+string(rune('a'+i))), perApp)
	}
	want := 2 * 2 * perApp

	doc, err := show(t, d.Socket(), "sessions")
	if err != nil {
		t.Fatalf("show sessions with %d sessions: %v", want, err)
	}
	var rows []SessionView
	if err := json.Unmarshal(doc, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != want {
		t.Fatalf("show sessions: %d rows, want %d", len(rows), want)
	}
	t.Logf("%d sessions: %d bytes of JSON", want, len(doc))
	series := func() int {
		rec := httptest.NewRecorder()
		d.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("metrics: status %d", rec.Code)
		}
		n := 0
		for sc := bufio.NewScanner(rec.Body); sc.Scan(); {
			if !strings.HasPrefix(sc.Text(), "#") {
				n++
			}
		}
		return n
	}
	before := series()

	// Past what one reply carries: 32,000 sessions of about 560 bytes
	// each, over 16 MiB (the daemon opens at most 16,384 cut-through
	// connections).
	const more = 2750
	for i := range 4 {
		connectCutThrough(t, ctx, newClient("client"+string(rune('c'+i))), more)
	}
	want = 2 * (2*perApp + 4*more)
	_, err = show(t, d.Socket(), "sessions")
	if err == nil {
		t.Fatalf("show sessions with %d sessions answered; want an error saying its JSON is too big for one reply (raise the count if it fits now)", want)
	}
	if !errors.Is(err, flow.ErrLimit) || !strings.Contains(err.Error(), "rows") || !strings.Contains(err.Error(), "ctl show apps") {
		t.Errorf("show sessions with %d sessions: %v; want a limit error that counts the rows and says what still answers", want, err)
	}
	t.Logf("show sessions with %d sessions: %v", want, err)
	// A page at a time (what ctl and top ask for), every session once.
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "pages"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	doc, err = cl.ShowAll(ctx, api.ShowSessions, 5*time.Second)
	if err != nil {
		t.Fatalf("show sessions a page at a time with %d sessions: %v", want, err)
	}
	t.Logf("%d sessions in pages of %d: %d bytes of JSON in %v", want, api.ShowPage, len(doc), time.Since(start).Round(time.Millisecond))
	rows = nil
	if err := json.Unmarshal(doc, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != want {
		t.Errorf("show sessions in pages: %d rows, want %d", len(rows), want)
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].Handle <= rows[i-1].Handle {
			t.Fatalf("show sessions in pages: row %d handle %v after %v: want each once, in order", i, rows[i].Handle, rows[i-1].Handle)
		}
	}
	for _, what := range []string{"apps", "listeners", "stats"} {
		if _, err := show(t, d.Socket(), what); err != nil {
			t.Errorf("show %s with %d sessions: %v", what, want, err)
		}
	}
	if after := series(); after > before+16 {
		t.Errorf("metrics: %d series with %d sessions, %d with %d: a series per session?", after, want, before, 2*2*2*perApp)
	}
}

// cutThroughServer attaches an app that listens on tcp://0.0.0.0:7090,
// the port connectCutThrough connects to.
func cutThroughServer(t testing.TB, ctx context.Context, socket string) {
	t.Helper()
	srv := attachRawClient(t, ctx, socket, "server")
	if _, _, err := srv.Call(ctx, &api.Bind{URI: "tcp://0.0.0.0:7090"}); err != nil {
		t.Fatal(err)
	}
}

// connectCutThrough opens n cut-through sessions pairs from cl to
// cutThroughServer's listener, four connects at a time (two sessions
// each: the connecting app's and the accepted one).
func connectCutThrough(t testing.TB, ctx context.Context, cl *api.Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				_, fds, err := cl.Call(ctx, &api.Connect{URI: "tcp://127.0.0.1:7090"})
				api.CloseFDs(fds)
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// attachRawClient attaches an app named name over a bare api.Client, with
// local scope, 4 KiB fifos and a 256 MiB segment: many sessions at the
// cost of a control request each (its notices' descriptors closed).
func attachRawClient(t testing.TB, ctx context.Context, socket, name string) *api.Client {
	t.Helper()
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: name, Notify: func(_ api.Message, fds []int) { api.CloseFDs(fds) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	_, fds, err := cl.Call(ctx, &api.Attach{Name: name, Scope: flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096, SegmentSize: 256 << 20})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// BenchmarkShowSessionsPage: the daemon's work for one page of 64
// sessions (sessionViews, as a Show of a page runs it), at a random place
// in a table of 2,000 cut-through sessions (the baseline) and of 32,000.
// A page costs its rows: the two take about as long (before the layer
// kept its handles sorted and a page read only its own fifos, the larger
// table's page took several times the smaller's).
func BenchmarkShowSessionsPage(b *testing.B) {
	for _, n := range []int{2000, 32000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			d := startDaemon(b)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cutThroughServer(b, ctx, d.Socket())
			for i := 0; i*2*4000 < n; i++ {
				connectCutThrough(b, ctx, attachRawClient(b, ctx, d.Socket(), fmt.Sprintf("client%d", i)), min(4000, n/2-i*4000))
			}
			all := d.SessionViews()
			if len(all) != n {
				b.Fatalf("%d sessions, want %d", len(all), n)
			}
			rng := rand.New(rand.NewPCG(1, 1))
			b.ResetTimer()
			for b.Loop() {
				after := all[rng.IntN(n-64)].Handle
				if rows := d.sessionViews(uint64(after), 64); len(rows) != 64 {
					b.Fatalf("a page of %d rows", len(rows))
				}
			}
		})
	}
}
