package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestSentHopLimitsAreTheNamespaces: with host B's net.ipv4.ip_default_ttl
// at 77 and its interface's IPv6 hop_limit at 55, what the datapath sends
// goes with them, as the kernel's sockets there send: a UDP datagram over
// IPv4 (TTL 77, as host A's raw socket reads it) and over IPv6 (hop limit
// 55, as A's socket's IPV6_RECVHOPLIMIT tells it), and a TCP connection's
// segments (TTL 77). Before, every frame went with 64.
func TestSentHopLimitsAreTheNamespaces(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := rig.B.Do(func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_default_ttl", []byte("77"), 0); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+rig.B.Link+"/hop_limit", []byte("55"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "hops"})

	// IPv4 UDP: A's raw socket sees the IP header.
	raw := openRawUDP4(t, rig.A)
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteTo([]byte("ttl?"), &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 7700}); err != nil {
		t.Fatal(err)
	}
	if ttl, err := rawTTL(raw.fd, 7700, unix.IPPROTO_UDP); err != nil || ttl != 77 {
		t.Errorf("UDP over IPv4: TTL %d (%v), want 77", ttl, err)
	}

	// IPv6 UDP: A's socket is told each datagram's hop limit.
	var c6 net.PacketConn
	if err := rig.A.Do(func() (err error) { c6, err = net.ListenPacket("udp6", "[::]:7701"); return }); err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	p6 := ipv6.NewPacketConn(c6)
	if err := p6.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		t.Fatal(err)
	}
	pc6, err := a.ListenPacket("udp://[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc6.Close()
	hop := -1
	for try := 0; try < 3 && hop < 0; try++ {
		if _, err := pc6.WriteTo([]byte("hops?"), &net.UDPAddr{IP: rig.A.IPv6.AsSlice(), Port: 7701}); err != nil {
			t.Fatal(err)
		}
		p6.SetReadDeadline(time.Now().Add(time.Second))
		if _, cm, _, err := p6.ReadFrom(make([]byte, 64)); err == nil && cm != nil {
			hop = cm.HopLimit
		}
	}
	if hop != 55 {
		t.Errorf("UDP over IPv6: hop limit %d, want 55", hop)
	}

	// TCP: A's raw TCP socket sees the segments of B's connection.
	var rfd int
	if err := rig.A.Do(func() (err error) {
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	ln := kernelListen(t, rig.A, fmt.Sprintf("%s:7702", rig.A.IPv4))
	go serveEach(ln, func(c net.Conn) {})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7702).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ttl, err := rawTTL(rfd, 7702, unix.IPPROTO_TCP); err != nil || ttl != 77 {
		t.Errorf("TCP over IPv4: TTL %d (%v), want 77", ttl, err)
	}
}

// rawTTL returns the TTL of the first IPv4 packet a raw socket reads whose
// UDP or TCP destination port is port.
func rawTTL(fd int, port uint16, proto int) (int, error) {
	buf := make([]byte, 70000)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < 20 || int(buf[9]) != proto {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n >= ihl+4 && uint16(buf[ihl+2])<<8|uint16(buf[ihl+3]) == port {
			return int(buf[8]), nil
		}
	}
	return 0, fmt.Errorf("no packet to port %d", port)
}
