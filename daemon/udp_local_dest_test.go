package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func init() { childApps["hostwriter"] = hostWriterChild }

// hostWriterChild is an app that listens on the URI its argument starts
// with and sends one datagram to each destination after it ("-" a
// *net.UDPAddr of port localDestPort with no IP), waiting up to a second
// for an answer after each. It prints "ready", then for each destination
// "sent I ERR" and "answer I PAYLOAD FROM" or "answer I none".
func hostWriterChild(sock, arg string) int {
	f := strings.Fields(arg)
	if len(f) < 2 {
		fmt.Println("usage")
		return 2
	}
	a, pc := childListen(sock, "hostwriter", f[0])
	if pc == nil {
		return 1
	}
	defer a.Close()
	fmt.Println("ready")
	buf := make([]byte, 64)
	for i, d := range f[1:] {
		dst := &net.UDPAddr{Port: localDestPort}
		if d != "-" {
			ap, err := netip.ParseAddrPort(d)
			if err != nil {
				fmt.Println("bad destination", d)
				return 2
			}
			dst = net.UDPAddrFromAddrPort(ap)
		}
		_, err := pc.WriteTo([]byte(fmt.Sprintf("app %d", i)), dst)
		fmt.Printf("sent %d %v\n", i, err)
		pc.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Printf("answer %d none\n", i)
			continue
		}
		fmt.Printf("answer %d %s %v\n", i, buf[:n], from)
	}
	return 0
}

// childListen attaches a child app named name to sock and listens on
// uri; on failure it prints why and returns a nil PacketConn.
func childListen(sock, name, uri string) (*app.App, net.PacketConn) {
	return childListenWith(app.Options{Socket: sock, Name: name}, uri)
}

// childListenWith is childListen with the app's options o.
func childListenWith(o app.Options, uri string) (*app.App, net.PacketConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	a, err := app.Attach(ctx, o)
	cancel()
	if err != nil {
		fmt.Println("attach", err)
		return nil, nil
	}
	pc, err := a.ListenPacket(uri)
	if err != nil {
		a.Close()
		fmt.Println("listen", err)
		return nil, nil
	}
	return a, pc
}

// localDestPort is the port the kernel sockets of host B listen on.
const localDestPort = 7951

// line reads the child's next line.
func (c *child) line(t *testing.T) string {
	t.Helper()
	l, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v (read %q)", err, l)
	}
	return strings.TrimSpace(l)
}

// TestPacketConnWriteToThisHostMatchesKernel: a datagram an app in the
// interface's namespace sends from a wire listener to an address of its
// own host (loopback, one of the namespace's addresses, the unspecified
// address, or no IP at all, which the kernel takes for this host) reaches
// the host's kernel socket of that port from the same source address a
// kernel socket's does, and that socket's answer comes back to the app.
// Before, the datapath looked for a next hop on the link, found none and
// dropped it (no-route) while WriteTo succeeded; WriteTo to an unspecified
// address failed with EINVAL.
func TestPacketConnWriteToThisHostMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	for _, c := range []struct {
		listen string   // the app's URI
		net    string   // the kernel sockets' network
		dsts   []string // "-": no IP
	}{
		{"udp://0.0.0.0:7950", "udp4", []string{"127.0.0.1", "127.0.0.2", rig.B.IPv4.String(), "0.0.0.0", "-"}},
		{"udp://[::]:7950", "udp6", []string{"::1", rig.B.IPv6.String(), "::", "-"}},
		{"udp://:7950", "udp", []string{"127.0.0.1", "::1", "-"}},
	} {
		var sink *net.UDPConn // of the app's network: "udp" a socket of both families
		if err := rig.B.Do(func() (err error) {
			sink, err = net.ListenUDP(c.net, &net.UDPAddr{Port: localDestPort})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		recv := func() (string, netip.AddrPort) {
			buf := make([]byte, 64)
			sink.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, from, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				return "", netip.AddrPort{}
			}
			return string(buf[:n]), from
		}
		// Where a kernel socket's datagram to each comes from.
		kernelFrom := make([]netip.AddrPort, len(c.dsts))
		for i, dst := range c.dsts {
			to := &net.UDPAddr{IP: net.ParseIP(dst), Port: localDestPort}
			if err := rig.B.Do(func() error {
				k, err := net.ListenUDP(c.net, &net.UDPAddr{Port: 7952})
				if err != nil {
					return err
				}
				defer k.Close()
				_, err = k.WriteTo([]byte("kernel"), to)
				return err
			}); err != nil {
				t.Fatalf("%s to %q: the kernel socket's WriteTo: %v", c.listen, dst, err)
			}
			var msg string
			if msg, kernelFrom[i] = recv(); msg != "kernel" {
				t.Fatalf("%s to %q: the kernel socket's datagram did not arrive (%q): the case is wrong", c.listen, dst, msg)
			}
		}
		args := []string{c.listen}
		for _, dst := range c.dsts {
			if dst == "-" {
				args = append(args, "-")
			} else {
				args = append(args, netip.AddrPortFrom(netip.MustParseAddr(dst), localDestPort).String())
			}
		}
		ch := startChildAppIn(t, rig.B, "hostwriter", d.Socket(), strings.Join(args, " "))
		ch.expect(t, "ready")
		for i, dst := range c.dsts {
			name := fmt.Sprintf("%s to %q", c.listen, dst)
			if l := ch.line(t); l != fmt.Sprintf("sent %d <nil>", i) {
				t.Errorf("%s: %q; the kernel socket's WriteTo succeeded", name, l)
			}
			msg, from := recv()
			if want := fmt.Sprintf("app %d", i); msg != want {
				t.Errorf("%s: the app's datagram did not arrive (got %q), the kernel socket's did (from %v)", name, msg, kernelFrom[i])
			} else if from.Addr() != kernelFrom[i].Addr() || from.Port() != 7950 {
				t.Errorf("%s: the app's datagram came from %v, the kernel socket's from %v: want the same address, port 7950", name, from, kernelFrom[i])
			} else if _, err := sink.WriteToUDPAddrPort([]byte("answer"), from); err != nil {
				t.Fatal(err)
			}
			l := ch.line(t)
			if !strings.HasPrefix(l, fmt.Sprintf("answer %d answer ", i)) || !strings.HasSuffix(l, fmt.Sprintf(":%d", localDestPort)) {
				t.Errorf("%s: the answer to the app: %q", name, l)
			}
		}
		sink.Close()
	}
}

// TestPacketConnWriteToAppOfThisHost: a datagram to another app's wire
// listener at an address of the host goes through the kernel to that
// app's port, as between two kernel sockets of one host.
func TestPacketConnWriteToAppOfThisHost(t *testing.T) {
	rig, d := tcpRig(t)
	r := attach(t, d, app.Options{Name: "reader"})
	rpc, err := r.ListenPacket("udp://0.0.0.0:7960")
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	ch := startChildAppIn(t, rig.B, "hostwriter", d.Socket(),
		"udp://0.0.0.0:7961 "+netip.AddrPortFrom(rig.B.IPv4, 7960).String()+" 127.0.0.1:7960")
	ch.expect(t, "ready")
	for i, dst := range []string{rig.B.IPv4.String(), "127.0.0.1"} {
		if l := ch.line(t); l != fmt.Sprintf("sent %d <nil>", i) {
			t.Fatalf("to %v: %q", dst, l)
		}
		buf := make([]byte, 64)
		rpc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := rpc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != fmt.Sprintf("app %d", i) {
			t.Fatalf("to %v: the reader got %q %v", dst, buf[:n], err)
		}
		if ua := from.(*net.UDPAddr); ua.Port != 7961 {
			t.Errorf("to %v: from %v, want port 7961", dst, from)
		}
		ch.line(t) // its wait for an answer, which the reader does not send
	}
}

// TestPacketConnBigDatagramToHostFromElsewhere: a datagram larger than a
// frame, which goes through the kernel path, from an app outside the
// interface's namespace (this test's process) to an address of host B
// itself reaches none of B's sockets either: dropped, counted as
// no-route. Before, it went through the listener's kernel socket to B's
// loopback service, which the app could not reach with a kernel socket of
// its own.
func TestPacketConnBigDatagramToHostFromElsewhere(t *testing.T) {
	rig, d := tcpRig(t)
	sink, err := bindKernel(rig.B, fmt.Sprintf("0.0.0.0:%d", localDestPort))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	a := attach(t, d, app.Options{Name: "elsewhere"})
	pc, err := a.ListenPacket("udp://0.0.0.0:7970")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	noRoute := d.Engine().Stats().Totals.Drops["no-route"]
	big := make([]byte, 6000)
	for _, dst := range []string{"127.0.0.1", "127.0.0.2", rig.B.IPv4.String(), "0.0.0.0"} {
		if _, err := pc.WriteTo(big, &net.UDPAddr{IP: net.ParseIP(dst), Port: localDestPort}); err != nil {
			t.Fatalf("WriteTo %s: %v", dst, err)
		}
	}
	buf := make([]byte, 8192)
	sink.SetReadDeadline(time.Now().Add(time.Second))
	if n, from, err := sink.ReadFrom(buf); err == nil {
		t.Errorf("B's loopback service got %d bytes from %v: an app outside B's namespace reached it", n, from)
	}
	if got := d.Engine().Stats().Totals.Drops["no-route"] - noRoute; got != 4 {
		t.Errorf("no-route drops: %d, want 4", got)
	}
}

func init() { childApps["oneshot"] = oneShotChild }

// childArgs reads a child's argument: the integers ns point to, then a
// destination ADDR:PORT, which it returns; nil (it printed why): not
// that.
func childArgs(arg string, ns ...*int) *net.UDPAddr {
	var to string
	args := make([]any, 0, len(ns)+1)
	for _, n := range ns {
		args = append(args, n)
	}
	if _, err := fmt.Sscan(arg, append(args, &to)...); err != nil {
		fmt.Println("usage", err)
		return nil
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		fmt.Println("bad address", to)
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}

// oneShotChild sends one datagram of the size and to the address its
// argument gives ("SIZE ADDR:PORT") from a wire listener, closes and
// exits, as a program that sends one message and is done.
func oneShotChild(sock, arg string) int {
	var size int
	dst := childArgs(arg, &size)
	if dst == nil {
		return 2
	}
	a, pc := childListen(sock, "oneshot", "udp://0.0.0.0:0")
	if pc == nil {
		return 1
	}
	defer a.Close()
	defer pc.Close()
	if _, err := pc.WriteTo(make([]byte, size), dst); err != nil {
		fmt.Println("write", err)
		return 1
	}
	fmt.Println("sent")
	return 0
}

// TestPacketConnDatagramsBeforeCloseGoOut: a program that sends one
// datagram and closes at once is heard, whichever way the daemon sends
// it: a small one to host A (a frame), a large one to host A (the kernel
// path, fragmented), a small and a large one to host B's own loopback
// service (the kernel path). Before, the kernel path's datagrams were
// lost (tx-kernel): the close released the kernel socket they go through
// before the worker took them from the tx fifo.
func TestPacketConnDatagramsBeforeCloseGoOut(t *testing.T) {
	rig, d := tcpRig(t)
	for _, c := range []struct {
		host *nstest.Host
		addr netip.Addr
		size int
	}{
		{rig.A, rig.A.IPv4, 100}, {rig.A, rig.A.IPv4, 6000},
		{rig.B, netip.MustParseAddr("127.0.0.1"), 100}, {rig.B, netip.MustParseAddr("127.0.0.1"), 6000},
	} {
		sink, err := bindKernel(c.host, fmt.Sprintf("0.0.0.0:%d", localDestPort))
		if err != nil {
			t.Fatal(err)
		}
		ch := startChildAppIn(t, rig.B, "oneshot", d.Socket(), fmt.Sprintf("%d %v", c.size, netip.AddrPortFrom(c.addr, localDestPort)))
		ch.expect(t, "sent")
		ch.cmd.Wait()
		buf := make([]byte, 8192)
		sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _, err := sink.ReadFrom(buf); err != nil || n != c.size {
			t.Errorf("%d bytes to %v, sent just before the app closed: got %d, %v", c.size, c.addr, n, err)
		}
		sink.Close()
	}
}
