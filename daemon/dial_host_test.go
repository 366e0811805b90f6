package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestDialHostKernelSocket: an app's Dial reaches a kernel socket of the
// host as net.Dial does, though the daemon's sessions do not: an app
// process in host B's namespace (the interface's) that dials B's own
// address (either family) or loopback, where a kernel program listens
// (TCP) or holds the port (UDP) and no app does, gets a kernel socket of
// its own connected there, and echoes through it; where nothing holds the
// port its Dial is refused as before. An app in another namespace (this
// test's) is told only that the address is the host's (no
// flow.ErrHostSocket, no ECONNREFUSED), as before: the daemon gives it no
// way to the host's own sockets.
func TestDialHostKernelSocket(t *testing.T) {
	rig, d := tcpRig(t)
	const port = 7551
	kl := kernelListen(t, rig.B, "[::]:"+strconv.Itoa(port))
	go echoServe(kl)
	udpEcho := func(addr netip.AddrPort) {
		u, err := rig.B.ListenUDP(addr, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		go echoUDP(u)
	}
	udpEcho(netip.AddrPortFrom(rig.B.IPv4, port+1))
	udpEcho(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port+1))
	// A name of both loopback addresses (in B's /etc/hosts, which ip
	// netns exec mounts from /etc/netns/B), one of which alone has a
	// kernel listener (IPv4's: the resolver gives IPv6's first): Dial
	// tries each address, as net.Dial does.
	go echoServe(kernelListen(t, rig.B, "127.0.0.1:"+strconv.Itoa(port+3)))
	hostsDir := "/etc/netns/" + rig.B.Name
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostsDir) })
	if err := os.WriteFile(hostsDir+"/hosts", []byte("127.0.0.1 both.test\n::1 both.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	reach := []string{
		"tcp://" + netip.AddrPortFrom(rig.B.IPv4, port).String(),
		"tcp://" + netip.AddrPortFrom(rig.B.IPv6, port).String(),
		"tcp://127.0.0.1:" + strconv.Itoa(port),
		"tcp://[::1]:" + strconv.Itoa(port),
		"udp://" + netip.AddrPortFrom(rig.B.IPv4, port+1).String(),
		"udp://127.0.0.1:" + strconv.Itoa(port+1),
		"tcp://both.test:" + strconv.Itoa(port+3),
	}
	nobody := []string{
		"tcp://" + netip.AddrPortFrom(rig.B.IPv4, port+2).String(),
		"tcp://127.0.0.1:" + strconv.Itoa(port+2),
		"udp://127.0.0.1:" + strconv.Itoa(port+2),
	}
	c := startChildAppIn(t, rig.B, "hostdial", d.Socket(), strings.Join(append(append([]string{}, reach...), nobody...), " "))
	c.expect(t, "attached")
	want := map[string]string{}
	for _, uri := range reach {
		want[uri] = "kernel socket, echoed"
	}
	for _, uri := range nobody {
		want[uri] = "refused"
	}
	for range len(reach) + len(nobody) {
		line, err := c.out.ReadString('\n')
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		uri, got, _ := strings.Cut(strings.TrimSpace(line), " ")
		if want[uri] != got {
			t.Errorf("dial %s from an app in host B: %s, want %s", uri, got, want[uri])
		}
	}

	// From this process's namespace, with an app of its own.
	a := attach(t, d, app.Options{Name: "elsewhere"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uri := "tcp://" + netip.AddrPortFrom(rig.B.IPv4, port).String()
	conn, err := a.Dial(ctx, uri)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s from an app in another namespace: connected", uri)
	}
	if errors.Is(err, flow.ErrHostSocket) || errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "is an address of this host") {
		t.Errorf("dial %s from an app in another namespace: %v; want the address named the host's, neither flow.ErrHostSocket nor ECONNREFUSED", uri, err)
	}
}

func init() { childApps["hostdial"] = hostDialChildApp }

// hostDialChildApp attaches to sock and dials each URI of arg in turn,
// printing "URI kernel socket, echoed" for a kernel socket it echoed a
// message through, "URI refused" for ECONNREFUSED, else what it got.
func hostDialChildApp(sock, arg string) int {
	a, err := app.Attach(context.Background(), app.Options{Socket: sock, Name: "hostdial"})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	defer a.Close()
	fmt.Println("attached")
	for _, uri := range strings.Fields(arg) {
		fmt.Println(uri, hostDialOutcome(a, uri))
	}
	return 0
}

func hostDialOutcome(a *app.App, uri string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, uri)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "refused"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	switch c.(type) {
	case *net.TCPConn, *net.UDPConn:
	default:
		return fmt.Sprintf("a %T", c)
	}
	msg := "through the kernel: " + uri
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "write: " + err.Error()
	}
	got := make([]byte, len(msg)+1)
	n, err := io.ReadAtLeast(c, got, len(msg))
	if err != nil || string(got[:n]) != msg {
		return fmt.Sprintf("echo: %q, %v", got[:n], err)
	}
	return "kernel socket, echoed"
}

// TestLoopbackListenerAnswersHost: an app in the interface's namespace
// whose UDP listener is bound to the loopback address serves the host's
// kernel sockets there, as a kernel socket bound to 127.0.0.1 does: a
// kernel client's datagram reaches it and its reply, from 127.0.0.1,
// comes back (not dropped as a source that is not the interface's).
func TestLoopbackListenerAnswersHost(t *testing.T) {
	rig, d := tcpRig(t)
	const port = 7561
	c := startChildAppIn(t, rig.B, "loecho", d.Socket(), "udp://127.0.0.1:"+strconv.Itoa(port))
	c.expect(t, "ready")
	k, err := rig.B.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	dst := netip.MustParseAddrPort("127.0.0.1:" + strconv.Itoa(port))
	got, from, err := udpRoundTrip(k, dst, []byte("from the host"))
	if err != nil || string(got) != "from the host" || from != dst {
		t.Errorf("a kernel socket of host B to the app's listener on %v: %q from %v, %v (drops %v)", dst, got, from, err, d.Stats().Totals.Drops)
	}
}

func init() { childApps["loecho"] = loEchoChildApp }

// loEchoChildApp attaches to sock, listens on the URI arg and echoes each
// datagram, after printing "ready".
func loEchoChildApp(sock, arg string) int {
	a, err := app.Attach(context.Background(), app.Options{Socket: sock, Name: "loecho"})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	defer a.Close()
	pc, err := a.ListenPacket(arg)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	fmt.Println("ready")
	echoPackets(pc)
	return 0
}
