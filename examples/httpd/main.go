package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}

func run() error {
	socket := flag.String("socket", app.DefaultSocket, "the daemon's control socket")
	ns := flag.String("ns", "", "the app namespace to attach to (default: the default namespace)")
	secret := flag.String("secret", "0", "the namespace's secret")
	listen := flag.String("listen", "tcp://0.0.0.0:8080", "the TCP endpoint to serve on")
	name := flag.String("name", "httpd", "the app's name in the daemon")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	sec, err := strconv.ParseUint(*secret, 0, 64)
	if err != nil {
		return fmt.Errorf("--secret %q: want a number (0 to 2^64-1)", *secret)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err := app.Attach(actx, app.Options{Socket: *socket, Name: *name, Namespace: *ns, Secret: sec})
	cancel()
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := a.Listen(*listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("httpd: serving on %s (app %d)\n", ln.Addr(), a.Index())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
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
