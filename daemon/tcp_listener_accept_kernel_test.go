package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// acceptKind is a listener to run the Accept cases on: the kernel's on host
// A first, then an app's on the wire and on a loopback address
// (cut-through alone), each with its clients.
type acceptKind struct {
	name   string
	listen func(t *testing.T, port uint16) net.Listener
	dial   func(port uint16) (net.Conn, error)
}

func acceptKinds(t *testing.T) []acceptKind {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "server"})
	b := attach(t, d, app.Options{Name: "client"})
	kernelDialTo := func(addr netip.Addr) func(uint16) (net.Conn, error) {
		return func(port uint16) (c net.Conn, err error) {
			err = rig.A.Do(func() error {
				c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, port).String(), 10*time.Second)
				return err
			})
			return c, err
		}
	}
	return []acceptKind{
		{"kernel", func(t *testing.T, port uint16) net.Listener {
			return kernelListen(t, rig.A, netip.AddrPortFrom(rig.A.IPv4, port).String())
		}, kernelDialTo(rig.A.IPv4)},
		{"wire", func(t *testing.T, port uint16) net.Listener {
			return listenApp(t, a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, port).String())
		}, kernelDialTo(rig.B.IPv4)},
		{"loopback", func(t *testing.T, port uint16) net.Listener {
			return listenApp(t, a, fmt.Sprintf("tcp://127.0.0.1:%d", port))
		}, func(port uint16) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return b.Dial(ctx, fmt.Sprintf("tcp://127.0.0.1:%d", port))
		}},
	}
}

// TestTCPListenerWaitingAcceptMatchesKernel: what Accepts waiting on a
// listener see, as on a kernel listener: Close wakes every one of eight
// with "accept tcp ADDR: use of closed network connection"; a deadline
// moved later, or cleared, while an Accept waits no longer ends it at
// the first deadline (it takes the connection that comes after); one
// moved into the past ends it at once with a timeout.
func TestTCPListenerWaitingAcceptMatchesKernel(t *testing.T) {
	for _, k := range acceptKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			ln := k.listen(t, 7670)
			errs := make(chan error, 8)
			for range 8 {
				go func() {
					c, err := ln.Accept()
					if c != nil {
						c.Close()
					}
					errs <- err
				}()
			}
			time.Sleep(50 * time.Millisecond)
			ln.Close()
			want := "accept tcp " + ln.Addr().String() + ": use of closed network connection"
			for range 8 {
				select {
				case err := <-errs:
					if err == nil || err.Error() != want || !errors.Is(err, net.ErrClosed) {
						t.Errorf("Accept waiting as the listener closed: %v, want %s", err, want)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("an Accept still waits 5s after Close")
				}
			}

			// A deadline moved later, or cleared, while Accept waits: a
			// connection that comes after the first deadline is taken.
			for _, move := range []time.Time{time.Now().Add(time.Hour), {}} {
				ln := k.listen(t, 7671)
				dl := ln.(deadliner)
				dl.SetDeadline(time.Now().Add(300 * time.Millisecond))
				got := make(chan error, 1)
				go func() {
					c, err := ln.Accept()
					if c != nil {
						c.Close()
					}
					got <- err
				}()
				time.Sleep(50 * time.Millisecond)
				dl.SetDeadline(move)
				time.Sleep(500 * time.Millisecond) // past the first deadline
				c, err := k.dial(7671)
				if err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-got:
					if err != nil {
						t.Errorf("deadline moved to %v while Accept waited: %v, want the connection", move, err)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("deadline moved to %v while Accept waited: no connection accepted", move)
				}
				c.Close()
				ln.Close()
			}

			// Moved into the past while Accept waits: it ends at once.
			ln = k.listen(t, 7672)
			got := make(chan error, 1)
			go func() { _, err := ln.Accept(); got <- err }()
			time.Sleep(50 * time.Millisecond)
			ln.(deadliner).SetDeadline(time.Now().Add(-time.Second))
			select {
			case err := <-got:
				var ne net.Error
				if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() ||
					err.Error() != "accept tcp "+ln.Addr().String()+": i/o timeout" {
					t.Errorf("deadline moved into the past while Accept waited: %v, want accept tcp %v: i/o timeout", err, ln.Addr())
				}
			case <-time.After(5 * time.Second):
				t.Error("deadline moved into the past while Accept waited: it still waits 5s later")
			}
		})
	}
}

// TestTCPListenerConcurrentAcceptMatchesKernel: sixteen goroutines accept
// from one listener while 200 clients connect at once, each sending its
// number: every client's connection is accepted exactly once, none lost,
// as on a kernel listener.
func TestTCPListenerConcurrentAcceptMatchesKernel(t *testing.T) {
	const clients = 200
	for _, k := range acceptKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			ln := k.listen(t, 7680)
			var mu sync.Mutex
			seen := map[string]int{}
			var accepters, readers sync.WaitGroup
			for range 16 {
				accepters.Go(func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						readers.Go(func() {
							defer c.Close()
							c.SetDeadline(time.Now().Add(20 * time.Second))
							b, err := io.ReadAll(c)
							mu.Lock()
							defer mu.Unlock()
							if err != nil {
								seen["error: "+err.Error()]++
								return
							}
							seen[string(b)]++
						})
					}
				})
			}
			var dialers sync.WaitGroup
			for i := range clients {
				dialers.Go(func() {
					c, err := k.dial(7680)
					if err != nil {
						t.Errorf("client %d: %v", i, err)
						return
					}
					fmt.Fprintf(c, "client %d", i)
					c.Close()
				})
			}
			dialers.Wait()
			waitFor(t, "every client accepted", 20*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				n := 0
				for _, v := range seen {
					n += v
				}
				return n >= clients
			})
			ln.Close()
			accepters.Wait()
			readers.Wait()
			var bad []string
			for i := range clients {
				if n := seen[fmt.Sprintf("client %d", i)]; n != 1 {
					bad = append(bad, fmt.Sprintf("client %d accepted %d times", i, n))
				}
			}
			for s, n := range seen {
				if !strings.HasPrefix(s, "client ") {
					bad = append(bad, fmt.Sprintf("%q %d times", s, n))
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s", strings.Join(bad, "; "))
			}
		})
	}
}
