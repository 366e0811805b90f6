package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// serveHTTP runs srv on ln until the test ends; the channel has Serve's
// error.
func serveHTTP(t *testing.T, srv *http.Server, ln net.Listener) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return done
}

// httpGet sends a GET of path on c and reads the response with its body.
func httpGet(c net.Conn, br *bufio.Reader, path string) (*http.Response, []byte, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", path); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, err
}

// readEnd reads c until it ends and returns how: io.EOF, a reset, or the
// bytes that came first.
func readEnd(c net.Conn, within time.Duration) (got []byte, err error) {
	c.SetReadDeadline(time.Now().Add(within))
	got, err = io.ReadAll(c)
	if err == nil {
		err = io.EOF
	}
	return got, err
}

// patternByte is byte i of the bodies the handlers stream.
func patternByte(i int64) byte { return byte(i % 251) }

// streamPattern writes n bytes of the pattern to w in chunks of 32 KiB.
func streamPattern(w io.Writer, n int64) error {
	buf := make([]byte, 32<<10)
	for off := int64(0); off < n; {
		m := min(int64(len(buf)), n-off)
		for i := range m {
			buf[i] = patternByte(off + i)
		}
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		off += m
	}
	return nil
}

// TestStdlibHTTPServer runs net/http's Server on an app listener on host
// B against kernel clients on host A: Shutdown lets an in-flight request
// finish while it closes idle keep-alive connections and returns once
// the request is done; ReadHeaderTimeout closes a connection whose
// request comes a header line at a time, without an answer; IdleTimeout
// closes a keep-alive connection left idle; ReadTimeout fails a handler's
// read of a body that stops coming, WriteTimeout its write to a client
// that reads nothing, both with a timeout; pipelined requests are
// answered in order on one connection; a large response to a client that
// reads slowly, stalling at times, arrives whole.
func TestStdlibHTTPServer(t *testing.T) {
	rig, d := tcpRig(t)
	srvApp := attach(t, d, app.Options{Name: "httpd"})
	dialB := func(t *testing.T, port uint16) (net.Conn, *bufio.Reader) {
		c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}

	t.Run("shutdown", func(t *testing.T) {
		ln := listenApp(t, srvApp, "tcp://0.0.0.0:7810")
		started, release := make(chan struct{}), make(chan struct{})
		mux := http.NewServeMux()
		mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-release
			io.WriteString(w, "slow done")
		})
		srv := &http.Server{Handler: mux}
		served := serveHTTP(t, srv, ln)

		var idle []net.Conn
		for range 2 {
			c, br := dialB(t, 7810)
			if resp, body, err := httpGet(c, br, "/fast"); err != nil || resp.StatusCode != 200 || string(body) != "fast" {
				t.Fatalf("GET /fast: %v %q, %v", resp, body, err)
			}
			idle = append(idle, c)
		}
		busy, busyR := dialB(t, 7810)
		fmt.Fprintf(busy, "GET /slow HTTP/1.1\r\nHost: b\r\n\r\n")
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the /slow handler did not start")
		}
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shut <- srv.Shutdown(ctx)
		}()
		for i, c := range idle {
			if got, err := readEnd(c, 5*time.Second); err != io.EOF || len(got) != 0 {
				t.Errorf("idle connection %d after Shutdown: %q, %v; want io.EOF", i, got, err)
			}
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		resp, err := http.ReadResponse(busyR, nil)
		if err != nil {
			t.Fatalf("the in-flight response: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "slow done" {
			t.Fatalf("the in-flight response's body: %q, %v", body, err)
		}
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return after the in-flight request")
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve: %v, want http.ErrServerClosed", err)
		}
		if got, err := readEnd(busy, 5*time.Second); err != io.EOF || len(got) != 0 {
			t.Errorf("the in-flight connection after its response: %q, %v; want io.EOF", got, err)
		}
	})

	t.Run("timeouts", func(t *testing.T) {
		ln := listenApp(t, srvApp, "tcp://0.0.0.0:7811")
		const (
			headerTimeout = 300 * time.Millisecond
			readTimeout   = 600 * time.Millisecond
			writeTimeout  = 600 * time.Millisecond
			idleTimeout   = 300 * time.Millisecond
		)
		handlerErr := make(chan error, 1)
		mux := http.NewServeMux()
		mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			handlerErr <- err
		})
		mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
			handlerErr <- streamPattern(w, 1<<30)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: headerTimeout, ReadTimeout: readTimeout,
			WriteTimeout: writeTimeout, IdleTimeout: idleTimeout}
		serveHTTP(t, srv, ln)
		isTimeout := func(err error) bool {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
		}

		t.Run("read header", func(t *testing.T) {
			// Before the dial: the server's ReadHeaderTimeout runs from
			// its accept, which may come before the dial returns here.
			start := time.Now()
			c, _ := dialB(t, 7811)
			fmt.Fprintf(c, "GET /ok HTTP/1.1\r\n")
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := fmt.Fprintf(c, "X-Slow-%d: %d\r\n", i, i); err != nil {
						return
					}
				}
			}()
			got, err := readEnd(c, 5*time.Second)
			if len(got) != 0 || err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("a request sent a line at a time: %q, %v; want the connection closed", got, err)
			}
			if took := time.Since(start); took < headerTimeout || took > 3*time.Second {
				t.Fatalf("closed after %v, ReadHeaderTimeout is %v", took, headerTimeout)
			}
		})

		t.Run("idle", func(t *testing.T) {
			c, br := dialB(t, 7811)
			if resp, body, err := httpGet(c, br, "/ok"); err != nil || resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("GET /ok: %v %q, %v", resp, body, err)
			}
			start := time.Now()
			if got, err := readEnd(c, 5*time.Second); err != io.EOF || len(got) != 0 {
				t.Fatalf("an idle keep-alive connection: %q, %v; want io.EOF", got, err)
			}
			if took := time.Since(start); took < idleTimeout/2 || took > 3*time.Second {
				t.Fatalf("closed after %v idle, IdleTimeout is %v", took, idleTimeout)
			}
		})

		t.Run("read", func(t *testing.T) {
			c, _ := dialB(t, 7811)
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n\r\n0123456789")
			select {
			case err := <-handlerErr:
				if !isTimeout(err) {
					t.Fatalf("the handler's read of a body that stops: %v, want a timeout", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler's read of a body that stops did not end")
			}
		})

		t.Run("write", func(t *testing.T) {
			c, _ := dialB(t, 7811)
			fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: b\r\n\r\n")
			select {
			case err := <-handlerErr:
				if !isTimeout(err) {
					t.Fatalf("the handler's write to a client that reads nothing: %v, want a timeout", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler's write to a client that reads nothing did not end")
			}
			// The connection ends: what was sent, then its end.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if n == 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client's read after the write timed out: %d bytes, %v", n, err)
			}
		})
	})

	t.Run("pipelining", func(t *testing.T) {
		ln := listenApp(t, srvApp, "tcp://0.0.0.0:7812")
		mux := http.NewServeMux()
		mux.HandleFunc("/n/{n}", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "n="+r.PathValue("n"))
		})
		mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
		serveHTTP(t, &http.Server{Handler: mux}, ln)
		c, br := dialB(t, 7812)
		var reqs bytes.Buffer
		const n = 20
		for i := range n {
			if i%2 == 0 {
				fmt.Fprintf(&reqs, "GET /n/%d HTTP/1.1\r\nHost: b\r\n\r\n", i)
			} else {
				body := strings.Repeat(strconv.Itoa(i), 1000)
				fmt.Fprintf(&reqs, "POST /echo HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
		}
		fmt.Fprintf(&reqs, "GET /n/last HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
		if _, err := c.Write(reqs.Bytes()); err != nil {
			t.Fatal(err)
		}
		for i := range n + 1 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			body, err := io.ReadAll(resp.Body)
			want := "n=last"
			if i < n && i%2 == 0 {
				want = "n=" + strconv.Itoa(i)
			} else if i < n {
				want = strings.Repeat(strconv.Itoa(i), 1000)
			}
			if err != nil || string(body) != want {
				t.Fatalf("response %d: %.40q, %v; want %.40q", i, body, err, want)
			}
		}
		if got, err := readEnd(c, 5*time.Second); err != io.EOF || len(got) != 0 {
			t.Fatalf("after Connection: close: %q, %v; want io.EOF", got, err)
		}
	})

	t.Run("slow reader", func(t *testing.T) {
		ln := listenApp(t, srvApp, "tcp://0.0.0.0:7813")
		const size = 16 << 20
		mux := http.NewServeMux()
		mux.HandleFunc("/stream/{n}", func(w http.ResponseWriter, r *http.Request) {
			// No Content-Length: chunked, flushed as it goes.
			n, _ := strconv.ParseInt(r.PathValue("n"), 10, 64)
			streamPattern(w, n)
		})
		serveHTTP(t, &http.Server{Handler: mux}, ln)
		c, br := dialB(t, 7813)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "GET /stream/%d HTTP/1.1\r\nHost: b\r\n\r\n", size)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
		}
		if err := readPatternSlowly(resp.Body, size); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The connection stays usable: the next request on it.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if resp, body, err := httpGet(c, br, "/stream/100000"); err != nil || resp.StatusCode != 200 || len(body) != 100000 {
			t.Fatalf("the next request: %v, %d bytes, %v", resp, len(body), err)
		}
	})
}

// readPatternSlowly reads n bytes of the pattern from r as a slow client
// does: small reads with pauses, two stalls that let every buffer on the
// way fill, then the rest at full speed; every byte is checked.
func readPatternSlowly(r io.Reader, n int64) error {
	buf := make([]byte, 64<<10)
	var off int64
	for off < n {
		want := len(buf)
		switch {
		case off < 4<<20:
			want = 4 << 10
			if off%(256<<10) == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		if off == 1<<20 || off == 3<<20 {
			time.Sleep(300 * time.Millisecond)
		}
		m, err := r.Read(buf[:min(int64(want), n-off)])
		for i := range m {
			if buf[i] != patternByte(off+int64(i)) {
				return fmt.Errorf("byte %d: %d, want %d", off+int64(i), buf[i], patternByte(off+int64(i)))
			}
		}
		off += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", off, err)
		}
	}
	if off != n {
		return fmt.Errorf("%d bytes, want %d", off, n)
	}
	if m, err := r.Read(buf); m != 0 || err != io.EOF {
		return fmt.Errorf("past the end: %d bytes, %v", m, err)
	}
	return nil
}
