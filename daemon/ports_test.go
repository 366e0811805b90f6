package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// ssPorts returns the local ports of the UDP sockets `ss -uan` lists in
// the named netns.
func ssPorts(t *testing.T, netns string) map[uint16]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "ss", "-uanH").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	ports := map[uint16]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if ap, err := netip.ParseAddrPort(strings.Replace(f[3], "*:", "0.0.0.0:", 1)); err == nil {
			ports[ap.Port()] = true
		}
	}
	return ports
}

// tcpBoundInactive is the kernel's TCP_BOUND_INACTIVE: the state bit of an
// inet_diag dump that asks for TCP sockets bound and neither listening nor
// connected, which `ss -tanB` (--bound-inactive, in iproute2 6.10; not in
// Debian 12's 6.1) lists and plain `ss -tan` never does.
const tcpBoundInactive = 13

// boundTCPPorts returns the local ports of the bound, inactive TCP sockets
// of h's namespace, both families, from the kernel's socket diagnostics
// (sock_diag(7)): what `ss -tanB` prints.
func boundTCPPorts(t *testing.T, h *nstest.Host) map[uint16]bool {
	t.Helper()
	ports := map[uint16]bool{}
	err := h.Do(func() error {
		for _, fam := range []byte{unix.AF_INET, unix.AF_INET6} {
			if err := inetDiagDump(fam, 1<<tcpBoundInactive, func(port uint16) { ports[port] = true }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sock_diag of %s: %v", h.Name, err)
	}
	return ports
}

// inetDiagDump dumps the TCP sockets of one family in the given states
// (a mask of 1<<state) and calls fn with each one's local port.
func inetDiagDump(family byte, states uint32, fn func(port uint16)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// struct nlmsghdr, then struct inet_diag_req_v2: family, protocol,
	// extensions, pad, states, and a zero socket id (48 bytes).
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	req[16], req[17] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return syscall.Errno(-e)
					}
				}
				return nil
			}
			// struct inet_diag_msg: family, state, timer, retrans, then
			// the socket id, whose first field is the local port
			// (network order).
			if len(m.Data) >= 8 {
				fn(binary.BigEndian.Uint16(m.Data[4:]))
			}
		}
	}
}

// bindKernel binds a kernel UDP socket in h to addr.
func bindKernel(h *nstest.Host, addr string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", a)
		return err
	})
	return c, err
}

// kernelClient binds a kernel UDP socket in h to an ephemeral port, for
// the test's life.
func kernelClient(t testing.TB, h *nstest.Host) *net.UDPConn {
	t.Helper()
	c, err := bindKernel(h, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPortsHeldInKernel: a listener bound to port 0 gets a real port of
// the kernel's ephemeral range, held by the kernel (ss lists it, a kernel
// socket cannot bind it) and receiving; a port a kernel socket holds is
// refused with EADDRINUSE; a Dial's LocalAddr is the port ss lists; ports
// go back at Close.
func TestPortsHeldInKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "ports"})

	// A port a kernel socket holds.
	k, err := bindKernel(rig.B, "0.0.0.0:7100")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.ListenPacket("udp://0.0.0.0:7100")
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.Is(err, flow.ErrAddressInUse) {
		t.Fatalf("bind of a port a kernel socket holds: %v", err)
	}
	k.Close()

	pcs := make([]net.PacketConn, 2)
	ports := make([]uint16, 2)
	for i := range pcs {
		pc, err := a.ListenPacket("udp://0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pcs[i] = pc
		ports[i] = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		if ports[i] == 0 {
			t.Fatalf("LocalAddr %v", pc.LocalAddr())
		}
	}
	if ports[0] == ports[1] {
		t.Fatalf("two binds of port 0 got port %d both", ports[0])
	}
	held := ssPorts(t, rig.B.Name)
	for _, p := range ports {
		if !held[p] {
			t.Fatalf("ss -uan in %s does not list port %d: %v", rig.B.Name, p, held)
		}
		if c, err := bindKernel(rig.B, fmt.Sprintf("0.0.0.0:%d", p)); !errors.Is(err, syscall.EADDRINUSE) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("kernel bind of the daemon's port %d: %v", p, err)
		}
	}
	// The port receives, and answers.
	cli := kernelClient(t, rig.A)
	dst := &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: int(ports[0])}
	buf := make([]byte, 2048)
	got := false
	for try := 0; try < 5 && !got; try++ {
		if _, err := cli.WriteTo([]byte("hello"), dst); err != nil {
			t.Fatal(err)
		}
		pcs[0].SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := pcs[0].ReadFrom(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) != "hello" {
			t.Fatalf("read %q", buf[:n])
		}
		if _, err := pcs[0].WriteTo([]byte("back"), from); err != nil {
			t.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err = cli.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "back" {
			t.Fatalf("reply: %q %v", buf[:n], err)
		}
		got = true
	}
	if !got {
		t.Fatal("port 0 listener received nothing")
	}

	// Dial: LocalAddr names the port the kernel holds.
	srv, err := bindKernel(rig.A, "0.0.0.0:7007")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7007", rig.A.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || la.Port == 0 || !la.IP.Equal(rig.B.IPv4.AsSlice()) {
		t.Fatalf("Dial LocalAddr %v", c.LocalAddr())
	}
	if !ssPorts(t, rig.B.Name)[uint16(la.Port)] {
		t.Fatalf("ss does not list the dialer's port %d", la.Port)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("ping")) || from.(*net.UDPAddr).Port != la.Port {
		t.Fatalf("server got %q from %v (%v), LocalAddr %v", buf[:n], from, err, la)
	}
	c.Close()

	// Close gives the ports back.
	for i, pc := range pcs {
		pc.Close()
		var kc *net.UDPConn
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			kc, err = bindKernel(rig.B, fmt.Sprintf("0.0.0.0:%d", ports[i]))
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("port %d after Close: %v", ports[i], err)
		}
		kc.Close()
	}
}
