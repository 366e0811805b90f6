package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// pagedTable answers Show requests from a table of rows keyed by handle,
// as the daemon pages them; stuck makes every page the first one (a
// daemon whose pages do not advance).
type pagedTable struct {
	handles []uint64 // sorted; a handle may repeat
	stuck   bool

	mu   sync.Mutex
	reqs []Show
}

func (p *pagedTable) Open(*Conn, *Hello) (ConnHandler, error) { return p, nil }
func (p *pagedTable) Close(error)                             {}

func (p *pagedTable) Handle(_ context.Context, req Request) (Message, []int, error) {
	m, ok := req.Msg.(*Show)
	if !ok {
		return nil, nil, nil
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, *m)
	p.mu.Unlock()
	after := m.After
	p.mu.Lock()
	if p.stuck {
		after = 0
	}
	p.mu.Unlock()
	var rows []string
	for i, h := range p.handles {
		if h <= after {
			continue
		}
		if m.Limit != 0 && len(rows) >= int(m.Limit) && h != p.handles[i-1] {
			break
		}
		rows = append(rows, fmt.Sprintf(`{"handle":"0x%x","n":%d}`, h, i))
	}
	return &ShowReply{JSON: []byte("[" + strings.Join(rows, ",") + "]")}, nil, nil
}

// sent returns the requests served since the last call, and forgets them.
func (p *pagedTable) sent() []Show {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.reqs
	p.reqs = nil
	return r
}

func servePaged(t *testing.T, p *pagedTable) *Client {
	t.Helper()
	path, _ := runServer(t, &Server{Logf: func(string, ...any) {}}, p)
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	cl, err := DialClient(cctx, path, ClientOptions{Name: "ctl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestShowAllPages: ShowAll asks for sessions a page at a time and joins
// every row once, a handle's rows across the page's end included; a
// daemon before 2.4 is asked for the whole table in one request; a
// daemon whose pages do not advance is an error, not a loop.
func TestShowAllPages(t *testing.T) {
	var hs []uint64
	for h := uint64(1); len(hs) < 2*ShowPage+5; h++ {
		hs = append(hs, h)
		if h == ShowPage { // a session and a lingering connection of one handle, across the first page's end
			hs = append(hs, h)
		}
	}
	p := &pagedTable{handles: hs}
	cl := servePaged(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	doc, err := cl.ShowAll(ctx, ShowSessions, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(doc, &rows); err != nil {
		t.Fatalf("joined document: %v", err)
	}
	if len(rows) != len(hs) {
		t.Fatalf("%d rows, want %d", len(rows), len(hs))
	}
	for i, r := range rows {
		if r.N != i {
			t.Fatalf("row %d is the table's row %d: want each once, in order", i, r.N)
		}
	}
	if r := p.sent(); len(r) != 3 || r[0].Limit != ShowPage || r[1].After != ShowPage || r[2].After != 2*ShowPage {
		t.Errorf("requests %+v, want three pages of %d", r, ShowPage)
	}
	// Reports that are one document are asked for whole.
	if _, err := cl.ShowAll(ctx, ShowStats, time.Second); err != nil {
		t.Fatal(err)
	}
	if r := p.sent(); len(r) != 1 || r[0].Paged() {
		t.Errorf("show stats: requests %+v, want one whole", r)
	}
	// A daemon of 2.3 takes no page.
	cl.server.Minor = 3
	doc, err = cl.ShowAll(ctx, ShowSessions, time.Second)
	cl.server.Minor = VersionMinor
	if err != nil {
		t.Fatal(err)
	}
	if r := p.sent(); len(r) != 1 || r[0].Paged() {
		t.Errorf("daemon 2.3: requests %+v, want one whole", r)
	}
	if err := json.Unmarshal(doc, &rows); err != nil || len(rows) != len(hs) {
		t.Errorf("daemon 2.3: %d rows (%v), want %d", len(rows), err, len(hs))
	}
	// Pages that do not advance.
	p.mu.Lock()
	p.stuck = true
	p.mu.Unlock()
	if _, err := cl.ShowAll(ctx, ShowSessions, time.Second); err == nil || !strings.Contains(err.Error(), "do not advance") {
		t.Errorf("pages that do not advance: %v", err)
	}
}
