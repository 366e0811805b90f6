package daemon

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestFollowPeerMACChangeOneWay: host A's link takes a new MAC and says
// nothing (no gratuitous ARP, no unsolicited NA) while host B only sends
// to it, UDP datagrams A never answers: nothing B's kernel sees uses or
// confirms its entry of A, stale at the old MAC. Kernel sockets of B,
// sending to addresses of A of their own (entries of their own in B's
// table), relearn the MAC as the kernel does: their use of the stale entry
// has it probed at the old MAC, fail and resolve again (1.0 to 3 s with
// the rig's timers seen, logged). The app's datagrams, through a
// PacketConn and a dialled UDP Conn over IPv4 and IPv6, reach the new MAC
// too (4.6 s seen): the resolver, handing out a stale entry, tells the
// kernel it is in use (nsbind.UseNeighbour, once a lookup, resolvedTTL
// apart), and the kernel checks it as it does for its own sockets. Before,
// they went to the old MAC for good (100 s seen), the entry stale at it.
func TestFollowPeerMACChangeOneWay(t *testing.T) {
	const port = 7480
	rig, d := tcpRig(t)
	staleNeighbours(t, rig.B)
	a := attach(t, d, app.Options{Name: "oneway"})
	// The kernel sockets send to addresses of A of their own: their use
	// of their entries must not relearn the app's.
	ref4, ref6 := netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("fd77::11")
	ipIn(t, rig.A, "addr", "add", ref4.String()+"/"+strconv.Itoa(nstest.PrefixLen4), "dev", rig.A.Link)
	ipIn(t, rig.A, "addr", "add", ref6.String()+"/"+strconv.Itoa(nstest.PrefixLen6), "dev", rig.A.Link, "nodad")
	pc4, err := a.ListenPacket("udp://0.0.0.0:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	pc6, err := a.ListenPacket("udp://[::]:" + strconv.Itoa(port+1))
	if err != nil {
		t.Fatal(err)
	}
	kernel := []*seqFlow{
		udpSeqFlow(t, "a kernel socket over IPv4", rig, kernelUDP(t, rig.B, "udp4", "0.0.0.0:0"), ref4),
		udpSeqFlow(t, "a kernel socket over IPv6", rig, kernelUDP(t, rig.B, "udp6", "[::]:0"), ref6),
	}
	apps := []*seqFlow{
		udpSeqFlow(t, "the app's PacketConn over IPv4", rig, pc4, rig.A.IPv4),
		udpSeqFlow(t, "the app's PacketConn over IPv6", rig, pc6, rig.A.IPv6),
		dialSeqFlow(t, "the app's dialled UDP Conn over IPv4", rig, a, rig.A.IPv4),
		dialSeqFlow(t, "the app's dialled UDP Conn over IPv6", rig, a, rig.A.IPv6),
	}
	for _, f := range append(kernel, apps...) {
		f.waitAfter(t, 0, time.Now(), 3*time.Second)
	}
	if t.Failed() {
		return
	}
	// The resolution of the app's first datagrams confirmed B's entries
	// of A; nothing of B's kernel uses them since: they turn stale.
	for _, ip := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		waitFor(t, "B's kernel entry of "+ip.String()+" to turn stale", 6*time.Second, func() bool {
			return neighState(t, rig.B, ip) == nsbind.NeighStale
		})
	}
	const newMAC = "02:77:00:00:00:63"
	start := time.Now()
	ipIn(t, rig.A, "link", "set", "dev", rig.A.Link, "address", newMAC)
	// What is sent from now on leaves after the change: A takes it at its
	// new MAC only.
	for _, f := range append(kernel, apps...) {
		f.markFrom(f.sent.Load() + 1) // the next may be on its way
	}
	// The kernel's, the reference: up to the rest of a reachable time,
	// then the delay before the first probe and three probes.
	for _, f := range kernel {
		t.Logf("%s reached A's new MAC %v after the change", f.name, f.arrivedAfter(t, start, 8*time.Second))
	}
	// The app's: the resolver reads the stale entry within resolvedTTL
	// and a worker's localTTL, then the kernel takes as long to check it
	// as for its own socket.
	for _, f := range apps {
		t.Logf("%s reached A's new MAC %v after the change", f.name, f.arrivedAfter(t, start, 10*time.Second))
	}
	for _, ip := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		t.Logf("B's kernel entry of %v: %v at %q", ip, neighState(t, rig.B, ip), neighMAC(t, rig.B, ip))
	}
}

// staleNeighbours shortens the neighbour timers of host h's link (IPv4
// and IPv6) in the defaults' proportions: an entry is reachable for 1.1
// to 3.3 s after a confirmation, longer than the 1 s a stale one in use
// waits before its first probe, as the defaults' 15 to 45 s outlast their
// 5 s; three unicast probes 200 ms apart. An entry nothing uses turns
// stale and stays so. With fastNeighbours' reachable time, shorter than
// that delay, the kernel probes an entry used once again and again (each
// confirmation counts as a use), which hides what this rig is for.
func staleNeighbours(t *testing.T, h *nstest.Host) {
	t.Helper()
	neighTimers(t, h, "2200")
}

// dialSeqFlow is udpSeqFlow through a UDP Conn app a dials to a kernel
// socket of host A on to.
func dialSeqFlow(t *testing.T, name string, rig *nstest.Pair, a *app.App, to netip.Addr) *seqFlow {
	t.Helper()
	return seqFlowTo(t, name, rig, to, func(dst net.Addr) func([]byte) {
		c := dialUDPSide(t, rig, a, "app", dst.(*net.UDPAddr).AddrPort())
		return func(b []byte) { c.Write(b) }
	})
}

// neighState returns the state of host h's neighbour entry of ip on its
// link, 0 when it has none.
func neighState(t *testing.T, h *nstest.Host, ip netip.Addr) nsbind.NeighState {
	t.Helper()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	var st nsbind.NeighState
	if err := h.Do(func() error {
		ns, err := netlink.NeighList(h.IfIndex, fam)
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
				st = nsbind.NeighState(n.State)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st
}
