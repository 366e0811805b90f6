package daemon

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// reasmOKs reads Ip: ReasmOKs of h's /proc/net/snmp.
func reasmOKs(t *testing.T, h *nstest.Host) int { return int(snmp(t, h, "Ip:", "ReasmOKs")) }

// snmp reads counter name of group ("Ip:", "Tcp:", ...) in h's
// /proc/net/snmp.
func snmp(t *testing.T, h *nstest.Host, group, name string) uint64 {
	t.Helper()
	var v uint64
	if err := h.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != group {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, n := range names {
				if n == name && i < len(f) {
					v, _ = strconv.ParseUint(f[i], 10, 64)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// routeMTUToA gives host B a route to host A's address with path MTU mtu,
// as the kernel keeps one it learned from "fragmentation needed".
func routeMTUToA(t *testing.T, rig *nstest.Pair, mtu int) {
	t.Helper()
	if err := rig.B.Do(func() error {
		l, err := netlink.LinkByName(rig.B.Link)
		if err != nil {
			return err
		}
		dst := netip.PrefixFrom(rig.A.IPv4, 32)
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}, MTU: mtu})
	}); err != nil {
		t.Fatal(err)
	}
}

// hello sends a datagram from cli in host A to pc's port on host B and
// returns the address pc saw it from: A's first datagram tells the app
// its peer (and B its MAC).
func hello(t *testing.T, rig *nstest.Pair, cli *net.UDPConn, pc net.PacketConn) net.Addr {
	t.Helper()
	if _, err := cli.WriteTo([]byte("hi"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: pc.LocalAddr().(*net.UDPAddr).Port}); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := pc.ReadFrom(make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	return from
}

// TestPathMTU: with a path MTU of 1,280 to host A in B's routes (as the
// kernel keeps one it learned from "fragmentation needed"), a 1,400-byte
// datagram that fits B's 1,500-byte link leaves fragmented through the
// kernel path and arrives whole; a 1,000-byte one still goes as one frame.
func TestPathMTU(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	routeMTUToA(t, rig, 1280)
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "pmtu"})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := kernelClient(t, rig.A)
	from := hello(t, rig, cli, pc)
	buf := make([]byte, 4096)
	txKernel := func() uint64 { return d.Engine().Stats().Totals.TxKernel }
	for _, tc := range []struct {
		size     int
		fragment bool
	}{{1000, false}, {1400, true}} {
		k0, r0 := txKernel(), reasmOKs(t, rig.A)
		msg := fragFill(tc.size, tc.size)
		var got []byte
		for try := 0; try < 3 && got == nil; try++ { // the first may wait for the neighbour
			if _, err := pc.WriteTo(msg, from); err != nil {
				t.Fatal(err)
			}
			cli.SetReadDeadline(time.Now().Add(time.Second))
			if n, _, err := cli.ReadFrom(buf); err == nil {
				got = buf[:n]
			}
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: got %d bytes", tc.size, len(got))
		}
		// The workers publish their counters when idle: give them a moment.
		var k uint64
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			if k = txKernel() - k0; k > 0 || time.Now().After(deadline) {
				break
			}
		}
		r := reasmOKs(t, rig.A) - r0
		t.Logf("%d bytes: kernel path %d, reassembled on A %d", tc.size, k, r)
		if tc.fragment != (k > 0) || tc.fragment != (r > 0) {
			t.Fatalf("%d bytes: kernel path %d, reassembled on A %d; want fragmented: %v", tc.size, k, r, tc.fragment)
		}
	}
}
