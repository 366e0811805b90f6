package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/xsessiond/xsessiond/app"
)

// quicEchoServe accepts the QUIC connections of ln and echoes each of
// their streams back, until ctx ends. Errors go to errs.
func quicEchoServe(ctx context.Context, ln *quic.Listener, errs chan<- error) {
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			for {
				s, err := c.AcceptStream(ctx)
				if err != nil {
					return
				}
				go func() {
					if _, err := io.Copy(s, s); err != nil {
						select {
						case errs <- fmt.Errorf("echo stream %d: %w", s.StreamID(), err):
						default:
						}
					}
					s.Close()
				}()
			}
		}()
	}
}

// quicEchoCheck dials addr through tr and echoes streams of size random
// bytes over one connection, all at once, each checked.
func quicEchoCheck(t *testing.T, tr *quic.Transport, addr net.Addr, tc *tls.Config, streams, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, addr, tc, &quic.Config{})
	if err != nil {
		t.Fatalf("QUIC dial %v: %v", addr, err)
	}
	defer c.CloseWithError(0, "done")
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			want := make([]byte, size)
			rand.Read(want)
			s, err := c.OpenStreamSync(ctx)
			if err != nil {
				errs <- fmt.Errorf("stream %d: open: %w", i, err)
				return
			}
			go func() {
				if _, err := s.Write(want); err != nil {
					errs <- fmt.Errorf("stream %d: write: %w", i, err)
				}
				s.Close()
			}()
			got, err := io.ReadAll(s)
			if err != nil {
				errs <- fmt.Errorf("stream %d: read after %d bytes: %w", i, len(got), err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("stream %d: %d bytes back of %d, not the same", i, len(got), len(want))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestQUICOverPacketConn: quic-go, a QUIC stack written for
// net.PacketConn, runs unchanged on an app's PacketConn, as server and
// as client, against quic-go on a kernel UDP socket of host A: 8 streams
// of 1 MiB each way over one connection, every byte checked, IPv4 and
// IPv6. It reads and writes from many goroutines, sets deadlines and
// sends datagrams of up to the path's MTU, as a QUIC stack does.
func TestQUICOverPacketConn(t *testing.T) {
	rig, d := tcpRig(t)
	cert, pool, _ := selfSigned(t, rig.A.IPv4, rig.B.IPv4, rig.A.IPv6, rig.B.IPv6)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"xs-echo"}}
	clientTLS := &tls.Config{RootCAs: pool, NextProtos: []string{"xs-echo"}}
	a := attach(t, d, app.Options{Name: "quic"})
	// echo serves echo through quic-go on srv and checks 8 streams of
	// 1 MiB from cli to at over one connection.
	echo := func(t *testing.T, srv, cli net.PacketConn, at string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		str := &quic.Transport{Conn: srv}
		defer str.Close()
		ln, err := str.Listen(serverTLS, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		errs := make(chan error, 64)
		go quicEchoServe(ctx, ln, errs)
		ctr := &quic.Transport{Conn: cli}
		defer ctr.Close()
		quicEchoCheck(t, ctr, udpAddr(t, at), clientTLS, 8, 1<<20)
		cancel()
		for len(errs) > 0 {
			// A stream the client's close of the connection ended is not
			// the server's failure.
			if err := <-errs; !errors.As(err, new(*quic.ApplicationError)) {
				t.Errorf("server: %v", err)
			}
		}
	}
	for _, fam := range []struct {
		name string
		a, b string
	}{{"ipv4", rig.A.IPv4.String(), rig.B.IPv4.String()}, {"ipv6", "[" + rig.A.IPv6.String() + "]", "[" + rig.B.IPv6.String() + "]"}} {
		// The app's PacketConn and a kernel socket of host A, the one on
		// port 7443 serving.
		conns := func(t *testing.T, appPort, kernelPort string) (net.PacketConn, net.PacketConn) {
			pc, err := a.ListenPacket("udp://" + fam.b + ":" + appPort)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			kc, err := bindKernel(rig.A, fam.a+":"+kernelPort)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { kc.Close() })
			return pc, kc
		}
		t.Run(fam.name+"/app-server", func(t *testing.T) {
			pc, kc := conns(t, "7443", "0")
			echo(t, pc, kc, fam.b+":7443")
		})
		t.Run(fam.name+"/app-client", func(t *testing.T) {
			pc, kc := conns(t, "0", "7443")
			echo(t, kc, pc, fam.a+":7443")
		})
	}
}

func udpAddr(t *testing.T, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
