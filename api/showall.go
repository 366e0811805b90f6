package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ShowPage is the number of rows ShowAll asks for at a time: a session's
// row is under 1 KiB of JSON, so a page stays far below what one reply
// carries (MaxReassembled), however long its names.
const ShowPage = 4096

// showPaged says which reports a daemon of version 2.4 serves a page at a
// time (Show.After, Show.Limit): the tables keyed by handle.
func showPaged(what ShowWhat) bool { return what == ShowSessions || what == ShowListeners }

// ShowAll asks the daemon for the report what and returns its JSON
// document. Sessions and listeners are asked for ShowPage rows at a time
// and the pages' rows joined into one array, so a table of any size is
// shown, not only one whose JSON one reply carries; a daemon before
// version 2.4 is asked for the whole report. The pages are each a
// snapshot: a session made or ended between two pages may be missing, as
// in ss's reading of a table that changes under it, but none is listed
// twice. Each request is bounded by ctx and, when perCall > 0, by perCall:
// a large table's pages take as long as they take, each as long as one.
func (cl *Client) ShowAll(ctx context.Context, what ShowWhat, perCall time.Duration) ([]byte, error) {
	if !showPaged(what) || cl.server.Minor < 4 {
		return cl.showDoc(ctx, &Show{What: what}, perCall)
	}
	doc := []byte{'['}
	rows := 0
	var after uint64
	for {
		page, err := cl.showDoc(ctx, &Show{What: what, After: after, Limit: ShowPage}, perCall)
		if err != nil {
			return nil, err
		}
		var got []json.RawMessage
		if err := json.Unmarshal(page, &got); err != nil {
			return nil, fmt.Errorf("show %v: the daemon sent bad JSON: %w", what, err)
		}
		for _, r := range got {
			if rows > 0 {
				doc = append(doc, ',')
			}
			doc = append(doc, r...)
			rows++
		}
		if len(got) < ShowPage {
			return append(doc, ']'), nil
		}
		last, err := rowHandle(got[len(got)-1])
		if err != nil {
			return nil, fmt.Errorf("show %v: the daemon sent a row without its handle: %w", what, err)
		}
		if last <= after {
			return nil, fmt.Errorf("show %v: the daemon's page after handle %#x ends at %#x: its pages do not advance", what, after, last)
		}
		after = last
	}
}

// showDoc sends req and returns the document of its ShowReply, waiting at
// most perCall when it is > 0.
func (cl *Client) showDoc(ctx context.Context, req *Show, perCall time.Duration) ([]byte, error) {
	if perCall > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, perCall)
		defer cancel()
	}
	m, fds, err := cl.Call(ctx, req)
	CloseFDs(fds)
	if err != nil {
		return nil, err
	}
	sr, ok := m.(*ShowReply)
	if !ok {
		return nil, fmt.Errorf("show %v: the daemon answered %v", req.What, m.Type())
	}
	return sr.JSON, nil
}

// rowHandle reads a row's "handle" key, a string "0x…".
func rowHandle(row json.RawMessage) (uint64, error) {
	var r struct {
		Handle *string `json:"handle"`
	}
	if err := json.Unmarshal(row, &r); err != nil {
		return 0, err
	}
	if r.Handle == nil {
		return 0, fmt.Errorf("no handle key")
	}
	h, ok := strings.CutPrefix(*r.Handle, "0x")
	if !ok {
		return 0, fmt.Errorf("handle %q: want 0x and hex digits", *r.Handle)
	}
	return strconv.ParseUint(h, 16, 64)
}
