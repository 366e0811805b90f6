package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xsessiond/xsessiond/examples/internal/attach"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}

func run() error {
	flags := attach.Register(flag.CommandLine, "httpd",
		"httpd serves HTTP/1.1 on a TCP listener of xsessiond: GET /bytes/N answers N bytes, byte i being\n"+
			"i mod 251 (HEAD: the headers alone); POST /echo answers the request's body; GET /healthz answers\n"+
			"\"ok\". A connection is closed when a request's header takes over 10 s, the next request does\n"+
			"not come within 60 s, or a request body or a response stalls (a read or write of up to 32 KiB\n"+
			"waits 30 s). SIGINT or SIGTERM stops it once the responses under way are sent (5 s at most).")
	listen := flag.String("listen", "tcp://0.0.0.0:8080", attach.ListenUsage("tcp", "serve on"))
	flag.Parse()
	if err := attach.CheckArgs(flag.CommandLine, *listen, "tcp"); err != nil {
		return err
	}
	a, ctx, stop, err := flags.Attach()
	if err != nil {
		return err
	}
	defer stop()
	ln, err := a.Listen(*listen)
	if err != nil {
		return err
	}
	srv := newServer()
	fmt.Printf("httpd: serving on %s (app %d)\n", ln.Addr(), a.Index())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		// The responses under way are sent, for 5 s at most; then every
		// connection is closed.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return flags.Gone(a, err)
	}
	// Serve returns as Shutdown begins: wait for it to end.
	<-stopped
	fmt.Println("httpd: stopped")
	return nil
}

// maxBytes bounds GET /bytes/N.
const maxBytes = 1 << 40

// The bounds on what a client holds: a keep-alive connection waiting for
// its next request (idleTimeout), a request's header (headerTimeout), and
// each read of a request body and write of a response (stallTimeout; a
// transfer that moves goes on as long as it needs).
var (
	idleTimeout   = 60 * time.Second
	headerTimeout = 10 * time.Second
	stallTimeout  = 30 * time.Second
)

// newServer returns the server of Handler with the bounds above.
func newServer() *http.Server {
	return &http.Server{Handler: Handler(), ReadHeaderTimeout: headerTimeout, IdleTimeout: idleTimeout}
}

// parseCount returns N of /bytes/N: decimal digits alone (no sign, no
// space), at most maxBytes.
func parseCount(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n <= maxBytes
}

// Handler serves /bytes/N, /echo and /healthz.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, ok := parseCount(r.PathValue("n"))
		if !ok {
			http.Error(w, "want a byte count: decimal digits, at most "+strconv.FormatInt(maxBytes, 10), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method == http.MethodHead {
			// The headers alone: net/http would drop the body's bytes
			// after they were made, up to N of them.
			return
		}
		rc := http.NewResponseController(w)
		_, _ = io.CopyN(stallWriter{w, rc}, &pattern{}, n)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		// The body goes back as it comes in: without full duplex,
		// net/http discards what is unread of it when the response
		// starts (up to 256 KiB, then it closes the connection after
		// the response), which would cut the echo short.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, "cannot echo on this connection", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		rc := http.NewResponseController(w)
		_, _ = io.Copy(stallWriter{w, rc}, stallReader{r.Body, rc})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// stallWriter writes to a response, each write (up to 32 KiB, io.Copy's
// buffer) failing when the client has not taken it within stallTimeout.
// What the response holds buffered when the
// handler returns is sent within the deadline of the last write; net/http
// lifts the deadline before the connection's next request.
type stallWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (s stallWriter) Write(b []byte) (int, error) {
	if err := s.rc.SetWriteDeadline(time.Now().Add(stallTimeout)); err != nil {
		return 0, err
	}
	return s.w.Write(b)
}

// stallReader reads a request body, each read failing when the client
// sent nothing for it within stallTimeout.
type stallReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (s stallReader) Read(b []byte) (int, error) {
	if err := s.rc.SetReadDeadline(time.Now().Add(stallTimeout)); err != nil {
		return 0, err
	}
	return s.r.Read(b)
}

// pattern reads the endless stream whose byte i is i mod 251.
type pattern struct{ i int }

func (p *pattern) Read(b []byte) (int, error) {
	for k := range b {
		b[k] = byte(p.i)
		p.i++
		if p.i == 251 {
			p.i = 0
		}
	}
	return len(b), nil
}
