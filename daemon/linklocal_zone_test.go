package daemon

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestLinkLocalSenderNamesItsLink: a wildcard listener's link-local
// sender, and a link-local peer of a TCP listener's connection, carry the
// zone of the link, as a kernel socket's do (its scope id): the
// interface's index, which the daemon takes back in a zone as it takes
// the name (the kernel, in B's netns, gives the name), or the zone the
// listener's URI gave. A reply to the address so named reaches the
// sender.
func TestLinkLocalSenderNamesItsLink(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "linkzone"})
	llA, llB := linkLocalOf(t, rig.A), linkLocalOf(t, rig.B)
	const port = 7440
	index := strconv.Itoa(rig.B.IfIndex)
	okZone := func(z string) bool { return z == index || z == rig.B.Link }

	// The reference: a kernel socket of B's on [::] names A's
	// link-local address with a zone, B's link's index (the net package
	// names it by the name the index has in the netns it looks it up
	// in, which need not be the socket's: here it can be veth-a, A's
	// link of the same index).
	kb, err := rig.B.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), port), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kb.Close()
	send := func(to uint16, what string) {
		t.Helper()
		ka, err := rig.A.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), 0), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer ka.Close()
		if _, err := ka.WriteToUDP([]byte(what), &net.UDPAddr{IP: llB.AsSlice(), Port: int(to), Zone: rig.A.Link}); err != nil {
			t.Fatal(err)
		}
	}
	send(port, "kernel")
	buf := make([]byte, 64)
	kb.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, kfrom, err := kb.ReadFromUDPAddrPort(buf)
	if err != nil || kfrom.Addr().WithZone("") != llA || kfrom.Addr().Zone() == "" {
		t.Fatalf("the reference: a kernel socket on [::] read from %v, %v; want %s zoned", kfrom, err, llA)
	}

	for _, c := range []struct{ name, uri, zone string }{
		{"wildcard", "udp://[::]:" + strconv.Itoa(port+1), ""},
		{"both families", "udp://:" + strconv.Itoa(port+2), ""},
		{"zoned by name", "udp://[" + llB.String() + "%" + rig.B.Link + "]:" + strconv.Itoa(port+3), rig.B.Link},
	} {
		t.Run(c.name, func(t *testing.T) {
			pc, err := a.ListenPacketConn(c.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			lport := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
			pc.SetReadDeadline(time.Now().Add(3 * time.Second))

			// ReadFrom, and a reply to the address it gave.
			ka, err := rig.A.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), 0), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer ka.Close()
			if _, err := ka.WriteToUDP([]byte("ping"), &net.UDPAddr{IP: llB.AsSlice(), Port: int(lport), Zone: rig.A.Link}); err != nil {
				t.Fatal(err)
			}
			n, from, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("ReadFrom: %q, %v", buf[:n], err)
			}
			ua := from.(*net.UDPAddr)
			if !ua.IP.Equal(llA.AsSlice()) || !okZone(ua.Zone) || (c.zone != "" && ua.Zone != c.zone) {
				t.Errorf("ReadFrom's sender %v; want %s zoned with %s or %s", from, llA, rig.B.Link, index)
			}
			if _, err := pc.WriteTo([]byte("pong"), from); err != nil {
				t.Fatalf("WriteTo %v: %v", from, err)
			}
			ka.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, _, err := ka.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("the reply to %v: %q, %v", from, buf[:n], err)
			}

			// ReadFromUDPAddrPort and ReadBatch name it the same.
			send(lport, "again")
			_, ap, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil || ap.Addr().WithZone("") != llA || ap.Addr().Zone() != ua.Zone {
				t.Errorf("ReadFromUDPAddrPort: %v, %v; want %s%%%s", ap, err, llA, ua.Zone)
			}
			send(lport, "batch")
			msgs := make([]app.Message, 4)
			m, err := pc.ReadBatch(msgs)
			if err != nil || m != 1 || msgs[0].Remote.Addr().WithZone("") != llA || msgs[0].Remote.Addr().Zone() != ua.Zone {
				t.Errorf("ReadBatch: %d, %v, %v; want %s%%%s", m, msgs[0].Remote, err, llA, ua.Zone)
			}
			pc.Release()
		})
	}

	// TCP: the connection a wildcard listener accepts from A's
	// link-local address names the link at both ends, as the kernel's.
	ln, err := a.Listen("tcp://[::]:" + strconv.Itoa(port+4))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var kc net.Conn
	if err := rig.A.Do(func() (err error) {
		kc, err = net.DialTimeout("tcp", net.JoinHostPort(llB.String()+"%"+rig.A.Link, strconv.Itoa(port+4)), 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ra, la := sc.RemoteAddr().(*net.TCPAddr), sc.LocalAddr().(*net.TCPAddr)
	if !ra.IP.Equal(llA.AsSlice()) || !okZone(ra.Zone) || !la.IP.Equal(llB.AsSlice()) || !okZone(la.Zone) {
		t.Errorf("the accepted connection: local %v, remote %v; want both zoned with %s or %s", la, ra, rig.B.Link, index)
	}
}
