package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestDialRemote dials a kernel UDP echo server on host A from an app on
// host B through the datapath (a connected session, not cut-through), and
// answers a kernel client from a listener with WriteTo.
func TestDialRemote(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	var srv *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		srv, err = net.ListenUDP("udp", &net.UDPAddr{Port: 7007})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go echoUDP(srv)
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "dialer"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7007", rig.A.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for i := range 100 {
		msg := bytes.Repeat([]byte{byte(i)}, 10+i)
		var got []byte
		for try := 0; try < 3 && got == nil; try++ { // the first may wait for ARP
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				t.Fatal(err)
			}
			got = buf[:n]
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("datagram %d: got %d bytes back, want %d", i, len(got), len(msg))
		}
	}
	// The session's figures, as ctl show sessions gives them: 100
	// datagrams (5950 bytes) each way, at least.
	ss := d.SessionViews()
	if len(ss) != 1 {
		t.Fatalf("sessions: %+v", ss)
	}
	s := ss[0]
	if s.State != "established" || s.Namespace != DefaultNamespace || s.RxPackets < 100 || s.TxPackets < 100 ||
		s.RxBytes < 5950 || s.TxBytes < 5950 || s.RxFifoSize == 0 || s.TxFifoSize == 0 || s.Dropped != 0 {
		t.Errorf("session figures: %+v", s)
	}
	d.ClearStats()
	if s := d.SessionViews()[0]; s.RxPackets != 0 || s.TxPackets != 0 || s.RxBytes != 0 || s.TxBytes != 0 {
		t.Errorf("session figures after ClearStats: %+v", s.Counters)
	}
}

// TestDialName dials a URI whose host is a name, as a net.Dial user would:
// localhost is resolved by the app's process (to the address of its
// /etc/hosts) and reaches a local listener, and a name that does not
// resolve gives the resolver's error, naming the URI.
func TestDialName(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli"})
	ln, err := srv.Listen("tcp://0.0.0.0:9071")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, "tcp://localhost:9071")
	if err != nil {
		t.Fatalf("dial tcp://localhost:9071: %v", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "127.0.0.1:9071" {
		t.Fatalf("remote %s, want 127.0.0.1:9071", got)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := c.Write([]byte("by name")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "by name" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	_, err = cli.Dial(ctx, "tcp://no-such-host.invalid:80")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !strings.Contains(err.Error(), "tcp://no-such-host.invalid:80") {
		t.Fatalf("dial of a name that does not resolve: %v; want a *net.DNSError naming the URI", err)
	}
}

// TestDialErrors: the errors of connects the datapath does not carry, as a
// user reads them: a loopback address no app listens on is refused
// (ECONNREFUSED, as the kernel refuses it); host B's own address names
// itself as such; each message names the destination once, as net.Dial's
// does.
func TestDialErrors(t *testing.T) {
	rig, d := tcpRig(t)
	cli := attach(t, d, app.Options{Name: "cli"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, uri := range []string{"tcp://127.0.0.1:9072", "udp://127.0.0.1:9072", "tcp://[::1]:9072"} {
		_, err := cli.Dial(ctx, uri)
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, flow.ErrLocalConnect) {
			t.Errorf("dial %s with nobody listening: %v; want ECONNREFUSED", uri, err)
		}
		// As net.Dial's: "dial tcp 127.0.0.1:9072: connect: ...".
		if _, addr, _ := strings.Cut(uri, "://"); err != nil && strings.Count(err.Error(), addr) != 1 {
			t.Errorf("dial %s: %q names the address other than once", uri, err)
		}
	}
	for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		for _, tr := range []string{"tcp", "udp"} {
			uri := tr + "://" + netip.AddrPortFrom(dst, 22).String()
			_, err := cli.Dial(ctx, uri)
			if err == nil || !strings.Contains(err.Error(), dst.String()+" is an address of this host") {
				t.Errorf("dial %s, host B's own address: %v", uri, err)
			}
			// As net.Dial's: "dial tcp 10.77.0.2:22: connect: ...".
			if addr := netip.AddrPortFrom(dst, 22).String(); err != nil && strings.Count(err.Error(), addr) != 1 {
				t.Errorf("dial %s: %q names the address other than once", uri, err)
			}
		}
	}
}

// TestDialLocalSystem: a URI with no address, or the unspecified one,
// dials the local system as net.Dial does: its loopback address of that
// family, which reaches a local app's listener cut-through.
func TestDialLocalSystem(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli"})
	ln := listenEcho(t, srv, "tcp://:9073")
	defer ln.Close()
	for uri, remote := range map[string]string{
		"tcp://:9073": "127.0.0.1:9073", "tcp://0.0.0.0:9073": "127.0.0.1:9073", "tcp://[::]:9073": "[::1]:9073",
	} {
		if err := appEcho(cli, uri, []byte("local")); err != nil {
			t.Errorf("dial %s: %v", uri, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := cli.Dial(ctx, uri)
		cancel()
		if err != nil {
			t.Fatalf("dial %s: %v", uri, err)
		}
		if got := c.RemoteAddr().String(); got != remote {
			t.Errorf("dial %s: remote %s, want %s", uri, got, remote)
		}
		c.Close()
	}
}
