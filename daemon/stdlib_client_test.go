package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestStdlibHTTPClient runs net/http's client, its Transport dialing with
// an app's Dial, against a kernel HTTP server on host A: requests reuse
// one keep-alive connection; a response body closed before its end
// closes that connection, and the next request dials anew; a context
// cancelled while the server holds the request ends the request with
// context.Canceled and the server sees its client go; one cancelled
// while the body is read ends that read.
func TestStdlibHTTPClient(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "http-client"})
	var conns, closed atomic.Int32
	blocked := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "small") })
	mux.HandleFunc("/bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.PathValue("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		streamPattern(w, n)
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		blocked <- struct{}{}
		select {
		case <-r.Context().Done():
			gone <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	})
	srv := &http.Server{Handler: mux, ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			closed.Add(1)
		}
	}}
	serveHTTP(t, srv, kernelListen(t, rig.A, ":7840"))
	base := "http://" + netip.AddrPortFrom(rig.A.IPv4, 7840).String()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return a.Dial(ctx, "tcp://"+addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(ctx context.Context, path string) (*http.Response, bool, error) {
		var reused bool
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		if err != nil {
			return nil, false, err
		}
		resp, err := client.Do(req)
		return resp, reused, err
	}

	t.Run("keep-alive", func(t *testing.T) {
		before := conns.Load()
		for i := range 5 {
			resp, reused, err := get(t.Context(), "/small")
			if err != nil {
				t.Fatalf("GET %d: %v", i, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "small" {
				t.Fatalf("GET %d: %q, %v", i, body, err)
			}
			if reused != (i > 0) {
				t.Fatalf("GET %d: connection reused %v", i, reused)
			}
		}
		resp, reused, err := get(t.Context(), "/bytes/3000000")
		if err != nil {
			t.Fatal(err)
		}
		if err := readPatternSlowly(resp.Body, 3000000); err != nil || !reused {
			t.Fatalf("a large body on the kept connection (reused %v): %v", reused, err)
		}
		resp.Body.Close()
		if n := conns.Load() - before; n != 1 {
			t.Fatalf("%d connections for requests in turn, want 1", n)
		}
	})

	t.Run("body closed early", func(t *testing.T) {
		tr.CloseIdleConnections()
		waitFor(t, "the idle connections closed", 5*time.Second, func() bool { return closed.Load() == conns.Load() })
		before := conns.Load()
		resp, _, err := get(t.Context(), "/bytes/100000000")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 100000)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The connection goes: the server's writes fail, it closes its
		// end.
		waitFor(t, "the server's end of the abandoned connection closed", 10*time.Second, func() bool { return closed.Load() == conns.Load() })
		resp, reused, err := get(t.Context(), "/small")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "small" || reused {
			t.Fatalf("the next request: %q, %v, reused %v", body, err, reused)
		}
		if n := conns.Load() - before; n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
	})

	t.Run("cancel while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-blocked
			cancel()
		}()
		start := time.Now()
		_, _, err := get(ctx, "/block")
		wg.Wait()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a request cancelled while the server holds it: %v, want context.Canceled", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the cancelled request returned after %v", took)
		}
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the server's handler did not see its client go")
		}
	})

	t.Run("cancel while reading", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		resp, _, err := get(ctx, "/bytes/1000000000")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		cancel()
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, resp.Body)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("reading the body after cancel: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("reading the body went on after cancel")
		}
	})
}
