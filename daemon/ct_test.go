package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// echoPair attaches an app echoing on udp://0.0.0.0:9000 and a client
// app, and returns the client's cut-through connection to the echo.
func echoPair(t *testing.T, d *Daemon) net.Conn {
	t.Helper()
	_, _, c := echoApps(t, d, app.Options{})
	return c
}

// echoApps is echoPair with both apps attached with o (their names set
// here), returning the apps too. The echo stops when its app closes.
func echoApps(t *testing.T, d *Daemon, o app.Options) (srv, cli *app.App, c net.Conn) {
	t.Helper()
	o.Name = "echo"
	srv = attach(t, d, o)
	o.Name = "client"
	cli = attach(t, d, o)
	echoServer(t, srv, 9000)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	// Dial returns once the client's end exists; the server maps its end
	// (the session's segment, the client's eventfd) when its notice
	// arrives. One echo makes sure both ends are there, so that callers
	// taking a descriptor census next do not count the server's as new.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if _, err := c.Write([]byte("ready")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ready" {
		t.Fatalf("first echo: %q, %v", buf[:n], err)
	}
	c.SetDeadline(time.Time{})
	return srv, cli, c
}

func TestCutThroughEcho(t *testing.T) {
	d := startDaemon(t)
	c := echoPair(t, d)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for i := range 1000 {
		msg := bytes.Repeat([]byte{byte(i)}, 1+i%1400)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("echo %d: got %d bytes, want %d", i, n, len(msg))
		}
	}
}

// streamCutThroughApps starts a daemon with two apps of 4 KiB fifos: a
// server listening on tcp://0.0.0.0:7000 and a client.
func streamCutThroughApps(t *testing.T) (d *Daemon, cli *app.App, ln net.Listener) {
	t.Helper()
	d, _, cli, ln = streamCutThroughPair(t)
	return d, cli, ln
}

// streamCutThroughPair is streamCutThroughApps with the listening app.
func streamCutThroughPair(t *testing.T) (d *Daemon, srv, cli *app.App, ln net.Listener) {
	t.Helper()
	d = startDaemon(t)
	srv = attach(t, d, app.Options{Name: "srv", RxFifoSize: 4096, TxFifoSize: 4096})
	cli = attach(t, d, app.Options{Name: "cli", RxFifoSize: 4096, TxFifoSize: 4096})
	ln, err := srv.Listen("tcp://0.0.0.0:7000")
	if err != nil {
		t.Fatal(err)
	}
	return d, srv, cli, ln
}

// TestStreamCutThrough runs a TCP cut-through session: Listen, Dial,
// Accept, a byte stream both ways, io.EOF after the peer closes.
func TestStreamCutThrough(t *testing.T) {
	_, cli, ln := streamCutThroughApps(t)
	c, err := cli.Dial(t.Context(), "tcp://127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sc.RemoteAddr().(*app.CutThroughAddr); !ok {
		t.Errorf("accepted session's remote %v", sc.RemoteAddr())
	}
	// 1 MiB through 4 KiB fifos: the writer waits for room again and again.
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go func() {
		c.Write(data)
		c.Close()
	}()
	sc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(sc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("stream: got %d bytes, want %d, equal %v", len(got), len(data), bytes.Equal(got, data))
	}
	if _, err := sc.Write([]byte("x")); err == nil {
		t.Error("write to a closed peer worked")
	}
	sc.Close()
}

// TestDeadlines checks read and write deadlines and that a timeout is a
// net.Error with Timeout() true.
func TestDeadlines(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv", RxFifoSize: 4096})
	cli := attach(t, d, app.Options{Name: "cli", TxFifoSize: 4096})
	pc, err := srv.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past the deadline: %v", err)
	}
	// A deadline moved into the past wakes a blocked reader.
	pc.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, _, err := pc.ReadFrom(make([]byte, 10)); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	pc.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Fatalf("woken reader: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving the deadline did not wake the reader")
	}
	c, err := cli.Dial(t.Context(), "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the write side fills up and times out.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	var werr error
	for range 1000 {
		if _, werr = c.Write(make([]byte, 500)); werr != nil {
			break
		}
	}
	if !isTimeout(werr) {
		t.Fatalf("write to a full fifo: %v", werr)
	}
}

// TestConnectRemoteNoDatapath: without a datapath a connect to a remote
// peer fails with flow.ErrConnect, and writes to the wire fail with
// app.ErrNoDatapath.
func TestConnectRemoteNoDatapath(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "a"})
	_, err := a.Dial(t.Context(), "udp://192.0.2.1:53")
	if !errors.Is(err, flow.ErrConnect) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("dial: %v", err)
	}
	pc, err := a.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}); !errors.Is(err, app.ErrNoDatapath) {
		t.Fatalf("WriteTo the wire: %v", err)
	}
}

// TestStreamCutThroughCloseWrite: CloseWrite of a cut-through TCP session
// is a half close, as on the wire: the peer reads everything written
// before it, then io.EOF, and answers on its own half, which the closer
// reads to EOF; a write after CloseWrite fails with EPIPE. Both ways
// round (the dialer and the accepter closing first).
func TestStreamCutThroughCloseWrite(t *testing.T) {
	_, cli, ln := streamCutThroughApps(t)
	for _, dialerFirst := range []bool{true, false} {
		c, sc := ctStream(t, cli, ln)
		closer, peer := c, sc
		if !dialerFirst {
			closer, peer = sc, c
		}
		for _, x := range []net.Conn{closer, peer} {
			x.SetDeadline(time.Now().Add(10 * time.Second))
		}
		msg := bytes.Repeat([]byte("half-close "), 2000) // more than the 4 KiB fifo
		errc := make(chan error, 1)
		go func() {
			if _, err := closer.Write(msg); err != nil {
				errc <- err
				return
			}
			errc <- closer.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(peer)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("dialer first %v: the peer read %d of %d bytes, then %v; want them all, then EOF", dialerFirst, len(got), len(msg), err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("dialer first %v: write, close write: %v", dialerFirst, err)
		}
		if _, err := closer.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("dialer first %v: write after CloseWrite: %v, want EPIPE", dialerFirst, err)
		}
		if _, err := peer.Write([]byte("the answer")); err != nil {
			t.Fatalf("dialer first %v: the peer's write on its open half: %v", dialerFirst, err)
		}
		peer.Close()
		if got, err := io.ReadAll(closer); err != nil || string(got) != "the answer" {
			t.Errorf("dialer first %v: the closer read %q, %v; want the answer, then EOF", dialerFirst, got, err)
		}
		closer.Close()
	}
}
