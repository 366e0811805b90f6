package udp

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReserveHoldsPort(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1"} {
		r, err := Reserve(netip.AddrPortFrom(netip.MustParseAddr(a), 0))
		if err != nil {
			t.Fatal(err)
		}
		if r.Addr().Port() == 0 {
			t.Fatalf("%s: no port chosen", a)
		}
		_, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.Addr()))
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Fatalf("%s: bind of a reserved port: %v", a, err)
		}
		// Datagrams sent to the reservation are dropped by its filter:
		// the socket never queues them (nothing to read, nothing held).
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("x"))
		c.Close()
		var buf [16]byte
		if _, _, err := unix.Recvfrom(r.fd, buf[:], unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("%s: reservation socket queued a datagram (%v)", a, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		c2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.Addr()))
		if err != nil {
			t.Fatalf("%s: port not released: %v", a, err)
		}
		c2.Close()
	}
}
