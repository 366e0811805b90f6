package daemon

import (
	"crypto/rand"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPBigTCP: a kernel peer whose interface allows GSO segments longer
// than 64 KiB (BIG TCP: `ip link set dev X gso_max_size 185000`, and
// gso_ipv4_max_size for IPv4, as container networks turn on) sends TCP
// segments whose IP length field says 0. In generic XDP mode on a veth they
// reach the daemon whole. Before, the XDP program counted them as bad
// length and gave them to the kernel, which reset the connection for the
// reserved port. Now the program steers them, and the link cuts each into
// segments gVisor takes: 4 MiB go each way through an app's echo over
// IPv4 and IPv6, exact, with BIG TCP segments received, no bad length
// counted and no reset from host B's kernel.
//
// In native mode a veth turns its peer's segmentation offload off, so the
// peer sends MSS-sized frames with BIG TCP on as without it: the native
// subtest checks that the echo is exact and nothing is reset, and that no
// BIG TCP segment came.
func TestTCPBigTCP(t *testing.T) {
	for _, mode := range []string{"generic", "native"} {
		t.Run(mode, func(t *testing.T) { testTCPBigTCP(t, mode) })
	}
}

func testTCPBigTCP(t *testing.T, mode string) {
	rig, d, a := multiBufferRig(t, nstest.Options{}, mode)
	if m := d.EngineStats().XDPMode; m != mode {
		t.Fatalf("xdp mode %q, want %q", m, mode)
	}
	if err := rig.A.Do(func() error {
		l, err := netlink.LinkByName(rig.A.Link)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetGSOMaxSize(l, 185000); err != nil {
			return err
		}
		return netlink.LinkSetGSOIPv4MaxSize(l, 185000)
	}); err != nil {
		t.Fatalf("BIG TCP on host A's veth: %v", err)
	}
	for i, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		port := uint16(7310 + i)
		ln := listenEcho(t, a, "tcp://"+netip.AddrPortFrom(dst, port).String())
		big0, rst0 := d.Engine().TCPStats().RxBig, outRsts(t, rig.B)
		data := make([]byte, 4<<20)
		_, _ = rand.Read(data)
		err := kernelEcho(rig, netip.AddrPortFrom(dst, port), data)
		ln.Close()
		s := d.EngineStats()
		big, rst := d.Engine().TCPStats().RxBig-big0, outRsts(t, rig.B)-rst0
		t.Logf("%v: %d BIG TCP segments; xdp bad_length %d; host B's kernel sent %d resets", dst, big, s.XDP["bad_length"], rst)
		if err != nil {
			t.Fatalf("%v: echo: %v", dst, err)
		}
		native := mode == "native"
		if (big == 0) != native || s.XDP["bad_length"] != 0 || rst != 0 {
			want := "some"
			if native {
				want = "none"
			}
			t.Fatalf("%v: %d BIG TCP segments, bad_length %d, resets %d: want %s, 0, 0", dst, big, s.XDP["bad_length"], rst, want)
		}
	}
}

// outRsts reads Tcp: OutRsts of h's /proc/net/snmp.
func outRsts(t *testing.T, h *nstest.Host) uint64 { return snmp(t, h, "Tcp:", "OutRsts") }
