package nstest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestPairUDP sends 10,000 datagrams from a kernel UDP socket in host A to
// one in host B, over IPv4 and IPv6, and checks every one arrives intact.
func TestPairUDP(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	for _, tc := range []struct {
		name string
		net  string
		dst  netip.Addr
	}{{"ipv4", "udp4", p.B.IPv4}, {"ipv6", "udp6", p.B.IPv6}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10000
			var rx *net.UDPConn
			if err := p.B.Do(func() (err error) {
				rx, err = net.ListenUDP(tc.net, &net.UDPAddr{IP: tc.dst.AsSlice(), Port: 9000})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			if err := rx.SetReadBuffer(8 << 20); err != nil {
				t.Fatal(err)
			}
			var tx *net.UDPConn
			if err := p.A.Do(func() (err error) {
				tx, err = net.DialUDP(tc.net, nil, &net.UDPAddr{IP: tc.dst.AsSlice(), Port: 9000})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer tx.Close()

			// The first datagrams would wait in the kernel's small queue for
			// unresolved neighbours (unres_qlen): resolve ARP/ND first.
			warmUp(t, tx, rx)

			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 2048)
				seen := make([]bool, n)
				for got := 0; got < n; {
					rx.SetReadDeadline(time.Now().Add(5 * time.Second))
					m, err := rx.Read(buf)
					if err != nil {
						done <- fmt.Errorf("after %d datagrams: %w", got, err)
						return
					}
					if string(buf[:m]) == "warm-up" {
						continue // a late copy of the neighbour warm-up
					}
					seq, ok := checkPayload(buf[:m])
					if !ok || seq >= n || seen[seq] {
						done <- fmt.Errorf("datagram %d: corrupt or duplicate (%d bytes)", got, m)
						return
					}
					seen[seq] = true
					got++
				}
				done <- nil
			}()
			for i := 0; i < n; i++ {
				if _, err := tx.Write(payload(uint32(i))); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				if i%256 == 255 {
					time.Sleep(200 * time.Microsecond) // stay under the receive buffer
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func warmUp(t *testing.T, tx, rx *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 64)
	for i := 0; i < 50; i++ {
		if _, err := tx.Write([]byte("warm-up")); err != nil {
			t.Fatal(err)
		}
		rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := rx.Read(buf); err == nil && string(buf[:n]) == "warm-up" {
			return
		}
	}
	t.Fatal("neighbour never resolved: no warm-up datagram arrived")
}

// payload is a sequence number, a size derived from it, and a hash of both.
func payload(seq uint32) []byte {
	size := 8 + int(seq*7919%1400)
	b := make([]byte, size+32)
	binary.BigEndian.PutUint32(b, seq)
	for i := 4; i < size; i++ {
		b[i] = byte(seq) ^ byte(i)
	}
	sum := sha256.Sum256(b[:size])
	copy(b[size:], sum[:])
	return b
}

func checkPayload(b []byte) (uint32, bool) {
	if len(b) < 40 {
		return 0, false
	}
	size := len(b) - 32
	sum := sha256.Sum256(b[:size])
	return binary.BigEndian.Uint32(b), bytes.Equal(sum[:], b[size:])
}

// TestPairQueues shows a multi-queue rig's veth ends have the asked queues.
func TestPairQueues(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 4, MTU: 3000})
	for _, h := range []*nstest.Host{p.A, p.B} {
		var mtu int
		if err := h.Do(func() error {
			l, err := netlink.LinkByName(h.Link)
			if err != nil {
				return err
			}
			mtu = l.Attrs().MTU
			// IFLA_NUM_RX_QUEUES / IFLA_NUM_TX_QUEUES: the device's real counts.
			if l.Attrs().NumRxQueues != 4 || l.Attrs().NumTxQueues != 4 {
				return fmt.Errorf("%s: netlink reports %d rx / %d tx queues, want 4/4", h.Link, l.Attrs().NumRxQueues, l.Attrs().NumTxQueues)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if mtu != 3000 {
			t.Errorf("%s mtu %d, want 3000", h.Link, mtu)
		}
	}
}

// TestPairLeaks makes and removes 50 rigs (every other one with a relay)
// and checks that no namespace, veth, file descriptor or goroutine is
// left behind. Namespace names, their mounts,
// descriptors and goroutines are checked with leakcheck (sets, polled
// until they settle: the kernel tears a namespace down asynchronously);
// the veths of the root namespace by name, polled the same way.
func TestPairLeaks(t *testing.T) {
	nstest.RequirePrivileged(t)
	pfx := fmt.Sprintf("xs%d-", os.Getpid())
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true,
		Dirs: []leakcheck.Dir{{Path: "/run/netns", Prefix: pfx}}, Mounts: []string{"/run/netns/" + pfx}})
	before := rootVeths(t)
	for i := 0; i < 50; i++ {
		p, err := nstest.NewPairNoTest(nstest.Options{Queues: 1 + i%4, Relay: i%2 == 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	leaks.Check(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := rootVeths(t)
		if slices.Equal(after, before) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("veths in the root namespace: before %v, after %v", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rootVeths lists the names of the veths of the caller's namespace.
func rootVeths(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if l.Type() == "veth" {
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	return names
}

// TestDoKeepsNamespace checks Do leaves the caller's namespace alone and
// really runs inside the host's.
func TestDoKeepsNamespace(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	self, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	var inside bool
	if err := p.A.Do(func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(p.A.NS)
		_, err = netlink.LinkByName(p.A.Link)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !inside {
		t.Fatal("Do did not run inside the host's namespace")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", p.A.Name)); err != nil {
		t.Fatal(err)
	}
}

// TestPing pings B from A over IPv4 and IPv6, and fails for an address no
// host has.
func TestPing(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	for _, dst := range []netip.Addr{p.B.IPv4, p.B.IPv6} {
		if err := p.A.Ping(dst); err != nil {
			t.Errorf("ping %v: %v", dst, err)
		}
	}
	if err := p.A.Ping(netip.MustParseAddr("10.77.0.99")); err == nil {
		t.Error("ping of an address nobody has succeeded")
	}
}
