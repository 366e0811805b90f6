package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// linkLocalOf waits for host h's IPv6 link-local address on its rig link
// to pass duplicate address detection and returns it.
func linkLocalOf(t *testing.T, h *nstest.Host) netip.Addr {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		var ll netip.Addr
		if err := h.Do(func() error {
			l, err := netlink.LinkByName(h.Link)
			if err != nil {
				return err
			}
			as, err := netlink.AddrList(l, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, a := range as {
				ip, _ := netip.AddrFromSlice(a.IP)
				if ip.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
					ll = ip
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if ll.IsValid() {
			return ll
		}
	}
	t.Fatalf("%s: no link-local address past DAD within 5 s", h.Name)
	return netip.Addr{}
}

// TestLinkLocalPeers: an app reaches a kernel peer's IPv6 link-local
// address and is reached at its own, over TCP and UDP, listening on the
// address itself, as a kernel socket scoped to the link is. Before, the
// port's reservation in the kernel was bound or connected without the
// link's index, which the kernel refuses for a link-local address: Dial
// and Listen failed with EINVAL.
func TestLinkLocalPeers(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "linklocal"})
	llA, llB := linkLocalOf(t, rig.A), linkLocalOf(t, rig.B)
	const port = 7420
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	roundTrip := func(what string, c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte(what)); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		got := make([]byte, len(what))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != what {
			t.Fatalf("%s: echo %q, %v", what, got, err)
		}
	}

	// The app dials A's kernel TCP listener.
	kl := kernelListen(t, rig.A, "[::]:"+strconv.Itoa(port))
	go serveEach(kl, func(c net.Conn) { io.Copy(c, c) })
	c, err := a.Dial(ctx, "tcp://["+llA.String()+"]:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("Dial to a link-local address: %v", err)
	}
	defer c.Close()
	roundTrip("tcp dial", c)

	// With a zone, as net.Dial takes it: the interface of the app's
	// namespace by name or index; RemoteAddr names it. Another zone is
	// refused and says which link the address is on.
	for _, zone := range []string{rig.B.Link, strconv.Itoa(rig.B.IfIndex)} {
		zc, err := a.Dial(ctx, "tcp://["+llA.String()+"%"+zone+"]:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("Dial to a link-local address zoned %q: %v", zone, err)
		}
		if got, want := zc.RemoteAddr().String(), "["+llA.String()+"%"+zone+"]:"+strconv.Itoa(port); got != want {
			t.Errorf("RemoteAddr %s, want %s", got, want)
		}
		roundTrip("tcp dial zoned "+zone, zc)
		zc.Close()
	}
	if _, err := a.Dial(ctx, "tcp://["+llA.String()+"%nosuch0]:"+strconv.Itoa(port)); !errors.Is(err, flow.ErrInvalidURI) ||
		!strings.Contains(err.Error(), "is on "+rig.B.Link) {
		t.Fatalf("Dial zoned with another interface: %v, want an invalid URI naming %s", err, rig.B.Link)
	}

	// A's kernel client dials the app's TCP listener on B's link-local
	// address.
	ln := listenApp(t, a, "tcp://["+llB.String()+"%"+rig.B.Link+"]:"+strconv.Itoa(port+1))
	go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
	var kc net.Conn
	if err := rig.A.Do(func() (err error) {
		kc, err = net.DialTimeout("tcp", net.JoinHostPort(llB.String()+"%"+rig.A.Link, strconv.Itoa(port+1)), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("kernel dial to the app's link-local listener: %v", err)
	}
	defer kc.Close()
	roundTrip("tcp listen", kc)

	// UDP: the app dials A's kernel socket, which echoes; and listens on
	// its link-local address, where A's socket sends.
	ku, err := rig.A.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), port+2), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ku.Close()
	go echoUDP(ku)
	uc, err := a.Dial(ctx, "udp://["+llA.String()+"]:"+strconv.Itoa(port+2))
	if err != nil {
		t.Fatalf("Dial udp to a link-local address: %v", err)
	}
	defer uc.Close()
	roundTrip("udp dial", uc)
	pc, err := a.ListenPacket("udp://[" + llB.String() + "]:" + strconv.Itoa(port+3))
	if err != nil {
		t.Fatalf("ListenPacket on a link-local address: %v", err)
	}
	defer pc.Close()
	if _, err := ku.WriteToUDP([]byte("udp listen"), &net.UDPAddr{IP: llB.AsSlice(), Port: port + 3, Zone: rig.A.Link}); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	if n, from, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "udp listen" {
		t.Fatalf("the app's link-local PacketConn read %q from %v: %v", buf[:n], from, err)
	}
}
