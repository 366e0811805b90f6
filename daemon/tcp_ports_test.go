package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// setPortRange sets ip_local_port_range in host h's netns.
func setPortRange(t *testing.T, h *nstest.Host, lo, hi int) {
	t.Helper()
	if err := h.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", fmt.Appendf(nil, "%d %d", lo, hi), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTCPListenPortZero: a TCP listener of port 0 gets the port the
// kernel picks, as a kernel listener does: one no kernel socket holds,
// from host B's ip_local_port_range; with none free, EADDRINUSE; the port
// goes back at Close.
func TestTCPListenPortZero(t *testing.T) {
	rig, d := tcpRig(t)
	setPortRange(t, rig.B, 40000, 40001)
	kernelListen(t, rig.B, "0.0.0.0:40000")
	a := attach(t, d, app.Options{Name: "p0"})
	ln := listenEcho(t, a, "tcp://0.0.0.0:0")
	if port := ln.Addr().(*net.TCPAddr).Port; port != 40001 {
		t.Fatalf("tcp://0.0.0.0:0 listens on %v, want port 40001, the one the kernel has free", ln.Addr())
	}
	if err := kernelEcho(rig, netip.AddrPortFrom(rig.B.IPv4, 40001), []byte("port zero")); err != nil {
		t.Fatal(err)
	}
	if !boundTCPPorts(t, rig.B)[40001] {
		t.Errorf("port 40001 is not held in host B's kernel")
	}
	if l, err := a.Listen("tcp://0.0.0.0:0"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("tcp://0.0.0.0:0 with no port free: %v, %v; want EADDRINUSE", l, err)
	}
	ln.Close()
	if err := rig.B.Do(func() error {
		l, err := net.Listen("tcp4", "0.0.0.0:40001")
		if err == nil {
			l.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("a kernel listener on the port after Close: %v", err)
	}
}

// TestTCPRelisten: a TCP listener closed and opened again on its port at
// once, as a server restarting its listener does: the port is free when
// Close returns, in the daemon and in the kernel.
func TestTCPRelisten(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "relisten"})
	for i := range 50 {
		ln, err := a.Listen("tcp://0.0.0.0:7400")
		if err != nil {
			t.Fatalf("listen %d: %v", i, err)
		}
		if i%10 == 0 {
			go echoServe(ln)
			if err := kernelEcho(rig, netip.AddrPortFrom(rig.B.IPv4, 7400), []byte("again")); err != nil {
				t.Fatalf("listen %d: %v", i, err)
			}
		}
		if err := ln.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

// TestTCPUnbindKeepsUDPPort: a UDP and a TCP listener of one port: closing
// the TCP one leaves the UDP one's port held in the kernel and receiving.
func TestTCPUnbindKeepsUDPPort(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "both"})
	pc, err := a.ListenPacketConn("udp://0.0.0.0:7500")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoUDP(pc)
	ln, err := a.Listen("tcp://0.0.0.0:7500")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if k, err := bindKernel(rig.B, "0.0.0.0:7500"); err == nil {
		k.Close()
		t.Fatal("a kernel UDP socket could bind the UDP listener's port after the TCP listener of that port closed")
	}
	k, err := bindKernel(rig.A, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	dst := netip.AddrPortFrom(rig.B.IPv4, 7500)
	if got, _, err := udpRoundTrip(k, dst, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("the UDP listener after the TCP one closed: %q, %v", got, err)
	}
}
