package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// boundedServer starts newServer's server with short bounds, and reports
// on closed the peer address of each connection the server closed.
func boundedServer(t *testing.T, idle, stall time.Duration) (addr string, closed <-chan string) {
	t.Helper()
	oldIdle, oldStall := idleTimeout, stallTimeout
	idleTimeout, stallTimeout = idle, stall
	t.Cleanup(func() { idleTimeout, stallTimeout = oldIdle, oldStall })
	ch := make(chan string, 16)
	srv := newServer()
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			ch <- c.RemoteAddr().String()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	// Close, not Shutdown: a test that failed does not wait for a
	// handler that does not end.
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), ch
}

// dialSmall connects to addr with a small receive buffer, so that a
// response the test does not read fills it soon.
func dialSmall(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc := c.(*net.TCPConn)
	tc.SetReadBuffer(4096)
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	return tc
}

// waitClosed waits for the server to close its connection with c.
func waitClosed(t *testing.T, closed <-chan string, c net.Conn, within time.Duration, what string) {
	t.Helper()
	tm := time.NewTimer(within)
	defer tm.Stop()
	for {
		select {
		case a := <-closed:
			if a == c.LocalAddr().String() {
				return
			}
		case <-tm.C:
			t.Fatalf("%s: the server still holds the connection %v later", what, within)
		}
	}
}

// TestHeadBytesAnswersAtOnce: HEAD /bytes/N answers the headers of GET's
// answer (the length N) at once, whatever N is, and the connection serves
// the next request. (net/http drops a HEAD response's body as the handler
// writes it: a handler that made the 1 TiB of the largest N kept a CPU
// busy for many minutes, even after the client left.)
func TestHeadBytesAnswersAtOnce(t *testing.T) {
	addr, _ := boundedServer(t, time.Minute, time.Minute)
	c := dialSmall(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HEAD /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", int64(maxBytes))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatalf("HEAD /bytes/%d: %v (no answer within 5 s)", int64(maxBytes), err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != maxBytes {
		t.Fatalf("HEAD /bytes/%d: %s, length %d, want 200 and the length", int64(maxBytes), resp.Status, resp.ContentLength)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET /healthz after HEAD: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != "ok\n" {
		t.Fatalf("GET /healthz after HEAD: %q, %v", got, err)
	}
}

// TestBytesCountIsDigits: N of /bytes/N is decimal digits alone, as a
// route's integer is in other HTTP frameworks; a sign or a space is a 400,
// as a minus sign was already.
func TestBytesCountIsDigits(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, n := range []string{"+5", "%2B5", "%205", "5%20", "-0", "0x10", "1e3", "%EF%BC%95"} {
		resp, err := http.Get(srv.URL + "/bytes/" + n)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /bytes/%s: %s, want 400", n, resp.Status)
		}
	}
	for _, c := range []struct {
		n    string
		want int
	}{{"0", 0}, {"007", 7}, {"251", 251}} {
		resp, err := http.Get(srv.URL + "/bytes/" + c.n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(got) != c.want {
			t.Errorf("GET /bytes/%s: %s, %d bytes (%v), want 200 and %d", c.n, resp.Status, len(got), err, c.want)
		}
	}
}

// TestIdleConnectionIsClosed: a keep-alive connection that sends no next
// request is closed after idleTimeout (net/http holds it for ever when
// neither IdleTimeout nor ReadTimeout is set).
func TestIdleConnectionIsClosed(t *testing.T) {
	addr, closed := boundedServer(t, 300*time.Millisecond, time.Minute)
	c := dialSmall(t, addr)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	waitClosed(t, closed, c, 5*time.Second, "an idle keep-alive connection")
}

// TestStalledClientsAreCut: a client that sends none of the body it
// announced, one that takes none of a large GET /bytes response, and one
// that sends an echo's body but takes none of the echo each lose their
// connection once stallTimeout passed with nothing moving, idle timeout
// or not.
func TestStalledClientsAreCut(t *testing.T) {
	addr, closed := boundedServer(t, time.Hour, 300*time.Millisecond)
	t.Run("body", func(t *testing.T) {
		c := dialSmall(t, addr)
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")
		waitClosed(t, closed, c, 5*time.Second, "a request body that stopped")
	})
	t.Run("bytes", func(t *testing.T) {
		c := dialSmall(t, addr)
		fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n", int64(maxBytes))
		waitClosed(t, closed, c, 10*time.Second, "a response the client does not read")
	})
	t.Run("echo", func(t *testing.T) {
		c := dialSmall(t, addr)
		const n = 64 << 20
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
		go func() {
			buf := make([]byte, 64<<10)
			for sent := 0; sent < n; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		waitClosed(t, closed, c, 10*time.Second, "an echo the client does not read")
	})
}

// TestSlowTransfersGoOn: the stall bound is on each step, not on the
// whole: a body that comes in pieces, each within stallTimeout, is echoed
// in full though it takes several times stallTimeout, and the connection
// serves a request that comes later than stallTimeout after a response.
func TestSlowTransfersGoOn(t *testing.T) {
	stall := 300 * time.Millisecond
	addr, _ := boundedServer(t, time.Minute, stall)
	c := dialSmall(t, addr)
	const pieces = 8
	go func() {
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", pieces*10)
		for range pieces {
			io.WriteString(c, "0123456789")
			time.Sleep(stall / 3)
		}
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != strings.Repeat("0123456789", pieces) {
		t.Fatalf("a slow POST /echo: %q, %v", got, err)
	}
	for _, path := range []string{"/bytes/100", "/healthz"} {
		time.Sleep(2 * stall)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s %v after the last response: %v", path, 2*stall, err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s %v after the last response: %s, %v", path, 2*stall, resp.Status, err)
		}
	}
}
