package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestEchoWholeBodyKeepsConnection: POST /echo answers every byte of the
// body, of any size (net/http discards what a handler has not read when
// the response starts, up to 256 KiB, and closes the connection after a
// larger one, unless the handler reads and writes in full duplex), and
// the connection serves the next request, pipelined behind it.
func TestEchoWholeBodyKeepsConnection(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, n := range []int{0, 1, 2047, 2048, 4097, 100 << 10, 256 << 10, 1 << 20, 8 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			body := make([]byte, n)
			rand.Read(body)
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				// The echo and a request behind it, in one write.
				req := fmt.Appendf(nil, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
				req = append(append(req, body...), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"...)
				c.Write(req)
			}()
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("POST /echo of %d bytes: %d back (%v), equal %v", n, len(got), err, bytes.Equal(got, body))
			}
			if resp.Close {
				t.Fatalf("POST /echo of %d bytes: the server closes the connection after it (Connection: close)", n)
			}
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("the request after POST /echo of %d bytes: %v", n, err)
			}
			got, err = io.ReadAll(resp.Body)
			if err != nil || string(got) != "ok\n" {
				t.Fatalf("GET /healthz after POST /echo of %d bytes: %q, %v", n, got, err)
			}
		})
	}
}

// TestBytesPattern: GET /bytes/N answers N bytes, byte i being i mod 251,
// with the length announced; N that is not a count is a 400.
func TestBytesPattern(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, n := range []int{0, 1, 250, 251, 252, 65536, 1<<20 + 3} {
		resp, err := http.Get(fmt.Sprintf("%s/bytes/%d", srv.URL, n))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(n) || len(got) != n {
			t.Fatalf("GET /bytes/%d: %s, length %d, %d bytes, %v", n, resp.Status, resp.ContentLength, len(got), err)
		}
		for i, b := range got {
			if b != byte(i%251) {
				t.Fatalf("GET /bytes/%d: byte %d is %d, want %d", n, i, b, i%251)
			}
		}
	}
	for _, n := range []string{"-1", "x", "1099511627777"} {
		resp, err := http.Get(srv.URL + "/bytes/" + n)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /bytes/%s: %s, want 400", n, resp.Status)
		}
	}
}
