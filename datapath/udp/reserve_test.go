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

// TestReservationPeerError: a reservation connected to a peer learns of
// the peer's ICMP port unreachable. The datagram that draws it is sent
// from the reservation's own socket to a loopback port nobody has.
func TestReservationPeerError(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1"} {
		// A port that is free: bound, then released.
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 0)))
		if err != nil {
			t.Fatal(err)
		}
		peer := c.LocalAddr().(*net.UDPAddr).AddrPort()
		c.Close()
		r, err := Reserve(netip.AddrPortFrom(netip.MustParseAddr(a), 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Err(); err != nil {
			t.Fatalf("%s: error before anything happened: %v", a, err)
		}
		if err := r.Connect(peer); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(r.FD(), []byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		fds := []unix.PollFd{{Fd: int32(r.FD())}}
		if n, err := unix.Poll(fds, 5000); err != nil || n != 1 || fds[0].Revents&unix.POLLERR == 0 {
			t.Fatalf("%s: poll %d %v revents %#x", a, n, err, fds[0].Revents)
		}
		if err := r.Err(); !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("%s: Err %v, want ECONNREFUSED", a, err)
		}
		if err := r.Err(); err != nil {
			t.Fatalf("%s: Err not cleared: %v", a, err)
		}
		r.Close()
		if r.FD() != -1 || r.Err() != nil {
			t.Fatalf("%s: after Close: fd %d", a, r.FD())
		}
	}
}
