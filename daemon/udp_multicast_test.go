package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// mcReader is a kernel UDP socket joined to a multicast group on a
// host's link, reading with the packet's TTL or hop limit.
type mcReader struct {
	c   net.PacketConn
	p4  *ipv4.PacketConn
	p6  *ipv6.PacketConn
	buf []byte
}

func joinGroup(t *testing.T, h *nstest.Host, group netip.AddrPort) *mcReader {
	t.Helper()
	r := &mcReader{buf: make([]byte, 65536)}
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		network := "udp4"
		if group.Addr().Is6() {
			network = "udp6"
		}
		if r.c, err = net.ListenPacket(network, fmt.Sprintf(":%d", group.Port())); err != nil {
			return err
		}
		g := &net.UDPAddr{IP: group.Addr().AsSlice()}
		if group.Addr().Is4() {
			r.p4 = ipv4.NewPacketConn(r.c)
			if err := r.p4.JoinGroup(ifi, g); err != nil {
				return err
			}
			return r.p4.SetControlMessage(ipv4.FlagTTL, true)
		}
		r.p6 = ipv6.NewPacketConn(r.c)
		if err := r.p6.JoinGroup(ifi, g); err != nil {
			return err
		}
		return r.p6.SetControlMessage(ipv6.FlagHopLimit, true)
	}); err != nil {
		t.Fatalf("join %v in %s: %v", group, h.Name, err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// read returns the next datagram, its sender and its TTL or hop limit.
func (r *mcReader) read(t *testing.T) ([]byte, netip.AddrPort, int) {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if r.p4 != nil {
		n, cm, from, err := r.p4.ReadFrom(r.buf)
		if err != nil || cm == nil {
			t.Fatalf("multicast read: %v (control %v)", err, cm)
		}
		return r.buf[:n], from.(*net.UDPAddr).AddrPort(), cm.TTL
	}
	n, cm, from, err := r.p6.ReadFrom(r.buf)
	if err != nil || cm == nil {
		t.Fatalf("multicast read: %v (control %v)", err, cm)
	}
	return r.buf[:n], from.(*net.UDPAddr).AddrPort(), cm.HopLimit
}

// TestUDPMulticastSend: an app's datagrams to a multicast group go out as
// a kernel UDP socket's do (the reference, sent from host B's kernel in
// the same rig): to the group's MAC, with a TTL or hop limit of 1, larger
// than a frame too, from a PacketConn and from a Conn dialled to the
// group, and a copy reaches the host's own sockets that joined the group
// (IP_MULTICAST_LOOP). With no route for the group, a dial fails with
// ENETUNREACH as the kernel's connect does; a TCP dial to a group fails
// with ENETUNREACH at once.
func TestUDPMulticastSend(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "multicast"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	g4 := netip.AddrPortFrom(netip.MustParseAddr("239.1.2.3"), 7611)
	g6 := netip.AddrPortFrom(netip.MustParseAddr("ff0e::1:3"), 7612)

	// No route for the IPv4 group on B yet (the rig has none, nor a
	// default one): B's kernel refuses the connect, and so does Dial.
	var kerr error
	if err := rig.B.Do(func() error {
		c, err := net.Dial("udp4", g4.String())
		if err == nil {
			c.Close()
		}
		kerr = err
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(kerr, syscall.ENETUNREACH) {
		t.Fatalf("the reference: B's kernel dial to %v without a route: %v, want ENETUNREACH", g4, kerr)
	}
	if c, err := a.Dial(ctx, "udp://"+g4.String()); err == nil || !errors.Is(err, syscall.ENETUNREACH) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial %v without a route: %v, want ENETUNREACH", g4, err)
	}
	ipIn(t, rig.B, "route", "add", "224.0.0.0/4", "dev", rig.B.Link)

	for _, g := range []netip.AddrPort{g4, g6} {
		t.Run(g.Addr().String(), func(t *testing.T) {
			onA := joinGroup(t, rig.A, g)
			onB := joinGroup(t, rig.B, g) // a socket of the sending host

			// The reference: B's kernel socket.
			var local netip.AddrPort
			if err := rig.B.Do(func() error {
				c, err := net.Dial("udp", g.String())
				if err != nil {
					return err
				}
				defer c.Close()
				local = c.LocalAddr().(*net.UDPAddr).AddrPort()
				_, err = c.Write([]byte("kernel"))
				return err
			}); err != nil {
				t.Fatalf("the reference: B's kernel socket to %v: %v", g, err)
			}
			if p, from, ttl := onA.read(t); string(p) != "kernel" || from != local || ttl != 1 {
				t.Fatalf("the reference: A read %q from %v, TTL %d", p, from, ttl)
			}
			if p, _, _ := onB.read(t); string(p) != "kernel" {
				t.Fatalf("the reference: B's own member read %q", p)
			}

			listen := "udp://0.0.0.0:7610"
			if g.Addr().Is6() {
				listen = "udp://[::]:7610"
			}
			pc, err := a.ListenPacket(listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			src := rig.B.IPv4
			if g.Addr().Is6() {
				src = rig.B.IPv6
			}
			for _, size := range []int{64, 3000} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(g)); err != nil {
					t.Fatalf("WriteTo %v: %v", g, err)
				}
				p, from, ttl := onA.read(t)
				if !bytes.Equal(p, msg) || from != netip.AddrPortFrom(src, 7610) || ttl != 1 {
					t.Fatalf("%d bytes to %v: A read %d bytes from %v, TTL %d", size, g, len(p), from, ttl)
				}
				if p, from, _ := onB.read(t); !bytes.Equal(p, msg) || from.Port() != 7610 {
					t.Fatalf("%d bytes to %v: B's own member read %d bytes from %v", size, g, len(p), from)
				}
			}

			c, err := a.Dial(ctx, "udp://"+g.String())
			if err != nil {
				t.Fatalf("Dial %v: %v", g, err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("dialled")); err != nil {
				t.Fatal(err)
			}
			if p, from, ttl := onA.read(t); string(p) != "dialled" || from != c.LocalAddr().(*net.UDPAddr).AddrPort() || ttl != 1 {
				t.Fatalf("A read %q from %v (the Conn is %v), TTL %d", p, from, c.LocalAddr(), ttl)
			}

			start := time.Now()
			tc, err := a.Dial(ctx, "tcp://"+g.String())
			if err == nil {
				tc.Close()
			}
			if !errors.Is(err, syscall.ENETUNREACH) || time.Since(start) > time.Second {
				t.Fatalf("TCP to %v: %v after %v, want ENETUNREACH at once", g, err, time.Since(start))
			}
		})
	}
	if drops := d.EngineStats().Totals.Drops; len(drops) > 0 {
		t.Errorf("drops %v", drops)
	}
}
