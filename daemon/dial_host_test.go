package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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

	reach := []string{
		"tcp://" + netip.AddrPortFrom(rig.B.IPv4, port).String(),
		"tcp://" + netip.AddrPortFrom(rig.B.IPv6, port).String(),
		"tcp://127.0.0.1:" + strconv.Itoa(port),
		"tcp://[::1]:" + strconv.Itoa(port),
		"udp://" + netip.AddrPortFrom(rig.B.IPv4, port+1).String(),
		"udp://127.0.0.1:" + strconv.Itoa(port+1),
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
