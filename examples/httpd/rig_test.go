package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestBoundsOverTheDaemon: httpd's server on an app.Listen listener of a
// daemon on host B, against kernel clients on host A: HEAD /bytes/N of the
// largest N answers at once, and an idle keep-alive connection and a
// client that takes none of a GET /bytes response lose their connection
// once the bounds passed (the deadlines of net/http's ResponseController
// are those of the app's connections).
func TestBoundsOverTheDaemon(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(daemon.Config{Socket: filepath.Join(t.TempDir(), "api.sock"),
		Datapath: datapath.Config{IfName: rig.B.Link, NetnsName: rig.B.Name}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: d.Socket(), Name: "httpd"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ln, err := a.Listen("tcp://0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}

	oldIdle, oldStall := idleTimeout, stallTimeout
	idleTimeout, stallTimeout = 500*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { idleTimeout, stallTimeout = oldIdle, oldStall })
	srv := newServer()
	closed := make(chan string, 16)
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dst := netip.AddrPortFrom(rig.B.IPv4, 8080).String()
	run := func(what string, fn func(c *net.TCPConn) error) {
		t.Helper()
		err := rig.A.Do(func() error {
			c, err := net.DialTimeout("tcp", dst, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			tc := c.(*net.TCPConn)
			tc.SetReadBuffer(4096)
			tc.SetDeadline(time.Now().Add(20 * time.Second))
			if err := fn(tc); err != nil {
				return err
			}
			tm := time.NewTimer(10 * time.Second)
			defer tm.Stop()
			for {
				select {
				case addr := <-closed:
					if addr == c.LocalAddr().String() {
						return nil
					}
				case <-tm.C:
					return fmt.Errorf("the server still holds the connection 10 s later")
				}
			}
		})
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	run("HEAD, then idle", func(c *net.TCPConn) error {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "HEAD /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n", int64(maxBytes))
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "HEAD"})
		if err != nil {
			return fmt.Errorf("HEAD /bytes/%d: %w", int64(maxBytes), err)
		}
		if resp.StatusCode != 200 || resp.ContentLength != maxBytes {
			return fmt.Errorf("HEAD /bytes/%d: %s, length %d", int64(maxBytes), resp.Status, resp.ContentLength)
		}
		return nil
	})
	run("a response not read", func(c *net.TCPConn) error {
		_, err := fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n", int64(maxBytes))
		return err
	})
	run("a body not sent", func(c *net.TCPConn) error {
		_, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
		return err
	})
}
