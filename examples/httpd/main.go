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
			"i mod 251; POST /echo answers the request's body; GET /healthz answers \"ok\". SIGINT or SIGTERM\n"+
			"stops it once the responses under way are sent (5 s at most).")
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
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
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

// Handler serves /bytes/N, /echo and /healthz.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "want a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, &pattern{}, n)
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
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
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
