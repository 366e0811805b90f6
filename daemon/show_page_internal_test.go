package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// TestPageRows: pages in handle order, each of at least the limit's rows,
// ending with every row of its last handle (a session and the lingering
// TCP connection that had its handle), so that paging on from the last
// handle lists every row once.
func TestPageRows(t *testing.T) {
	type row struct {
		h   Handle
		tag string
	}
	rows := []row{{9, "a"}, {3, "s"}, {5, "s"}, {3, "lingering"}, {1, "s"}, {7, "s"}, {5, "lingering"}, {2, "s"}}
	handle := func(r row) Handle { return r.h }
	page := func(after uint64, limit uint32) []row {
		return pageRows(slices.Clone(rows), handle, after, limit)
	}
	if got := page(0, 0); len(got) != len(rows) || !slices.IsSortedFunc(got, func(a, b row) int { return int(a.h) - int(b.h) }) {
		t.Fatalf("whole table: %v", got)
	}
	if got := page(0, 0); got[2] != (row{3, "s"}) || got[3] != (row{3, "lingering"}) {
		t.Errorf("rows of one handle: %v; want the session's before the lingering one's, as listed", got)
	}
	if got := page(1, 2); !slices.Equal(got, []row{{2, "s"}, {3, "s"}, {3, "lingering"}}) {
		t.Errorf("page after 1 of 2: %v; want it to end with every row of handle 3", got)
	}
	if got := page(9, 4); len(got) != 0 {
		t.Errorf("page after the last: %v", got)
	}
	for _, limit := range []uint32{1, 2, 3, 100} {
		var all []row
		var after uint64
		for pages := 0; ; pages++ {
			if pages > len(rows) {
				t.Fatalf("limit %d: pages do not end", limit)
			}
			p := page(after, limit)
			all = append(all, p...)
			if len(p) < int(limit) {
				break
			}
			after = uint64(p[len(p)-1].h)
		}
		if want := page(0, 0); !slices.Equal(all, want) {
			t.Errorf("limit %d: pages give %v, want %v", limit, all, want)
		}
	}
}

// TestShowPageOnlyTables: a page of a one-document report is refused.
func TestShowPageOnlyTables(t *testing.T) {
	d := &Daemon{}
	for _, what := range []api.ShowWhat{api.ShowApps, api.ShowNamespaces, api.ShowRules, api.ShowStats} {
		if _, err := d.show(&api.Show{What: what, Limit: 10}, api.Cred{}); !errors.Is(err, flow.ErrInvalidValue) {
			t.Errorf("show %v with a page: %v, want ErrInvalidValue", what, err)
		}
	}
}

// pagesMatchWhole asks for show sessions a page of limit rows at a time
// and checks that the pages give the rows of the whole report, in order:
// each once, a session and a lingering connection of one handle alike.
func pagesMatchWhole(t *testing.T, socket string, limit uint32) {
	t.Helper()
	type row struct {
		Handle Handle `json:"handle"`
		State  string `json:"state"`
		Remote string `json:"remote"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "pages"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	get := func(m *api.Show) []row {
		t.Helper()
		r, _, err := api.Do[*api.ShowReply](ctx, cl, m)
		if err != nil {
			t.Fatalf("show %+v: %v", *m, err)
		}
		var rows []row
		if err := json.Unmarshal(r.JSON, &rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	whole := get(&api.Show{What: api.ShowSessions})
	if !slices.ContainsFunc(whole, func(r row) bool { return r.State == "lingering" }) {
		t.Fatalf("no lingering row to page through: %v", whole)
	}
	var paged []row
	var after uint64
	for range len(whole) + 2 {
		p := get(&api.Show{What: api.ShowSessions, After: after, Limit: limit})
		paged = append(paged, p...)
		if len(p) < int(limit) {
			break
		}
		after = uint64(p[len(p)-1].Handle)
	}
	if !slices.Equal(paged, whole) {
		t.Errorf("pages of %d: %v; the whole report: %v", limit, paged, whole)
	}
}
