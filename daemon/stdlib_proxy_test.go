package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// halfCloser is a connection whose sending half closes alone.
type halfCloser interface{ CloseWrite() error }

// proxyConn copies a to b and b to a with io.Copy until both directions
// ended; each direction's end closes the sending half of the connection
// it wrote to, as a TCP proxy passes a FIN on.
func proxyConn(a, b net.Conn) {
	var wg sync.WaitGroup
	pass := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		dst.(halfCloser).CloseWrite()
	}
	wg.Add(2)
	go pass(a, b)
	go pass(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// TestStdlibProxy runs a TCP proxy made of io.Copy on an app of host B:
// it accepts kernel clients of host A and dials, with the app's Dial, a
// kernel server on host A. A server that answers only once its client's
// half is closed gets the FIN through the proxy, and its answer and its
// own FIN come back; an echo server streams both ways at once. Every
// byte is checked.
func TestStdlibProxy(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "proxy"})
	ln := listenApp(t, a, "tcp://0.0.0.0:7830")
	// The kernel servers on host A: 7831 answers, reversed, what it read
	// to the client's FIN, then closes; 7832 echoes as it reads, and
	// closes its half at the client's FIN.
	serverErr := make(chan error, 4)
	go serveEach(kernelListen(t, rig.A, ":7831"), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil {
			serverErr <- fmt.Errorf("the answering server's read: %w", err)
			return
		}
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
		if _, err := c.Write(got); err != nil {
			serverErr <- fmt.Errorf("the answering server's write: %w", err)
		}
	})
	go serveEach(kernelListen(t, rig.A, ":7832"), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(c, c); err != nil {
			serverErr <- fmt.Errorf("the echo server: %w", err)
			return
		}
		c.(*net.TCPConn).CloseWrite()
		c.Read(make([]byte, 1)) // the proxy's FIN
	})
	// The proxy: each connection's first byte says which server.
	go serveEach(ln, func(c net.Conn) {
		var which [1]byte
		if _, err := io.ReadFull(c, which[:]); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		up, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7830+uint16(which[0])).String())
		if err != nil {
			serverErr <- fmt.Errorf("the proxy's dial: %w", err)
			return
		}
		proxyConn(c, up)
	})

	data := make([]byte, 8<<20)
	rand.Read(data)
	reversed := bytes.Clone(data)
	for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
		reversed[i], reversed[j] = reversed[j], reversed[i]
	}
	for _, tc := range []struct {
		name   string
		server byte
		want   []byte
	}{
		{"answer after FIN", 1, reversed},
		{"echo", 2, data},
		{"empty, answer after FIN", 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send := data
			if tc.want == nil {
				send = nil
			}
			err := rig.A.Do(func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7830).String(), 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				sent := make(chan error, 1)
				go func() {
					_, err := c.Write(append([]byte{tc.server}, send...))
					if err == nil {
						err = c.(*net.TCPConn).CloseWrite()
					}
					sent <- err
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					return fmt.Errorf("read to the proxy's FIN: %w", err)
				}
				if err := <-sent; err != nil {
					return err
				}
				if !bytes.Equal(got, tc.want) {
					return fmt.Errorf("%d bytes back of %d: %w", len(got), len(tc.want), errEcho)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-serverErr:
				t.Fatal(err)
			default:
			}
		})
	}
}
