package daemon

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// fastNeighbours shortens the neighbour timers of host h's link (IPv4
// and IPv6): an entry is reachable for 0.1 to 0.3 s after a confirmation,
// a stale one in use is probed after 1 s, three unicast probes 200 ms
// apart, so that the kernel's relearning of a neighbour takes about two
// seconds, not the default's half a minute or more.
func fastNeighbours(t *testing.T, h *nstest.Host) {
	t.Helper()
	neighTimers(t, h, "200")
}

// neighTimers sets the neighbour timers of host h's link (IPv4 and
// IPv6): base_reachable_time_ms as given (an entry stays reachable for
// half to one and a half times it after a confirmation), 1 s before a
// stale entry in use is probed, probes 200 ms apart.
func neighTimers(t *testing.T, h *nstest.Host, reachableMS string) {
	t.Helper()
	if err := h.Do(func() error {
		for _, fam := range []string{"ipv4", "ipv6"} {
			dir := "/proc/sys/net/" + fam + "/neigh/" + h.Link + "/"
			for file, v := range map[string]string{"base_reachable_time_ms": reachableMS, "delay_first_probe_time": "1", "retrans_time_ms": "200"} {
				if err := os.WriteFile(dir+file, []byte(v), 0); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// seqFlow is a stream of numbered messages from host B to host A, one
// every 10 ms; got is the highest number A received, markAt when A first
// received one above mark (unix nanoseconds; 0: not yet).
type seqFlow struct {
	name         string
	sent, got    atomic.Int64
	mark, markAt atomic.Int64
}

// received notes that A received message n.
func (f *seqFlow) received(n int64) {
	if n > f.got.Load() {
		f.got.Store(n)
	}
	if n > f.mark.Load() {
		f.markAt.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// markFrom makes markAt the time A first receives a message above from.
func (f *seqFlow) markFrom(from int64) {
	f.mark.Store(1<<62 - 1)
	f.markAt.Store(0)
	f.mark.Store(from)
}

// arrivedAfter waits until A received a message above the mark, for at
// most within since start, and returns when it did, since start.
func (f *seqFlow) arrivedAfter(t *testing.T, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for f.markAt.Load() == 0 {
		if time.Since(start) > within {
			t.Errorf("%s: nothing sent after the change reached host A within %v (%d sent, up to %d received)",
				f.name, within, f.sent.Load(), f.got.Load())
			return within
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Unix(0, f.markAt.Load()).Sub(start)
}

// waitAfter waits until A receives a message sent after from was, for at
// most within, and returns how long that took since start, or fails.
func (f *seqFlow) waitAfter(t *testing.T, from int64, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for f.got.Load() <= from {
		if time.Since(start) > within {
			t.Errorf("%s: nothing sent after the change reached host A within %v (%d sent, up to %d received)",
				f.name, within, f.sent.Load(), f.got.Load())
			return within
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// udpSeqFlow sends numbered datagrams through pc (an app's or a kernel
// socket) to a kernel UDP socket of host A on to until the test ends.
func udpSeqFlow(t *testing.T, name string, rig *nstest.Pair, pc net.PacketConn, to netip.Addr) *seqFlow {
	t.Helper()
	return seqFlowTo(t, name, rig, to, func(dst net.Addr) func([]byte) {
		return func(b []byte) { pc.WriteTo(b, dst) }
	})
}

// seqFlowTo sends numbered datagrams, every 10 ms until the test ends,
// with the writer mk makes for dst, the address of a kernel UDP socket of
// host A on to, and counts those that socket receives.
func seqFlowTo(t *testing.T, name string, rig *nstest.Pair, to netip.Addr, mk func(dst net.Addr) func([]byte)) *seqFlow {
	t.Helper()
	rx, err := rig.A.ListenUDP(netip.AddrPortFrom(to, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	write := mk(rx.LocalAddr())
	f := &seqFlow{name: name}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); rx.Close() })
	go func() {
		b := make([]byte, 64)
		for {
			n, _, err := rx.ReadFrom(b)
			if err != nil {
				return
			}
			if n == 8 {
				f.received(int64(binary.BigEndian.Uint64(b)))
			}
		}
	}()
	go func() {
		for i := int64(1); ctx.Err() == nil; i++ {
			write(binary.BigEndian.AppendUint64(nil, uint64(i)))
			f.sent.Store(i)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return f
}

// tcpSeqFlow writes numbered messages over c, a connection to a kernel
// echo server of host A, and reads their echoes, until the test ends.
func tcpSeqFlow(t *testing.T, name string, c net.Conn) *seqFlow {
	t.Helper()
	f := &seqFlow{name: name}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); c.Close() })
	go func() {
		b := make([]byte, 8)
		for {
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			f.received(int64(binary.BigEndian.Uint64(b)))
		}
	}()
	go func() {
		for i := int64(1); ctx.Err() == nil; i++ {
			if _, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(i))); err != nil {
				return
			}
			f.sent.Store(i)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return f
}

// TestFollowPeerMACChangeUnannounced: host A's link takes a new MAC and
// says nothing (no gratuitous ARP, no unsolicited NA: arp_notify and
// ndisc_notify are off by default) while an app on host B sends to it
// (UDP over IPv4 and IPv6, TCP). B's kernel relearns it in its own time:
// its entry, unconfirmed, is probed at the old MAC, fails, and resolves
// again (about two seconds with the rig's timers, logged). The app's
// datagrams reach the new MAC as soon as B's kernel has it, and its TCP
// connection goes on. Before, the workers kept the old MAC for a second
// more: the resolution that read the new entry told them nothing, and the
// kernel's notice of it came while the resolver already had it.
func TestFollowPeerMACChangeUnannounced(t *testing.T) {
	const port = 7460
	rig, d := tcpRig(t)
	fastNeighbours(t, rig.B)
	a := attach(t, d, app.Options{Name: "mac"})
	ln := kernelListen(t, rig.A, ":"+strconv.Itoa(port))
	go echoServe(ln)
	pc4, err := a.ListenPacket("udp://0.0.0.0:" + strconv.Itoa(port+1))
	if err != nil {
		t.Fatal(err)
	}
	pc6, err := a.ListenPacket("udp://[::]:" + strconv.Itoa(port+2))
	if err != nil {
		t.Fatal(err)
	}
	flows := []*seqFlow{
		udpSeqFlow(t, "the app's UDP over IPv4", rig, pc4, rig.A.IPv4),
		udpSeqFlow(t, "the app's UDP over IPv6", rig, pc6, rig.A.IPv6),
		tcpSeqFlow(t, "the app's TCP connection", appDial(t, a, netip.AddrPortFrom(rig.A.IPv4, port))),
	}
	for _, f := range flows {
		f.waitAfter(t, 0, time.Now(), 2*time.Second)
		f.markFrom(f.sent.Load() + 1) // the next may be on its way
	}
	const newMAC = "02:77:00:00:00:62"
	start := time.Now()
	ipIn(t, rig.A, "link", "set", "dev", rig.A.Link, "address", newMAC)
	learned := map[bool]time.Duration{}
	for _, ip := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		waitFor(t, "B's kernel to learn A's new MAC for "+ip.String(), 10*time.Second, func() bool {
			return neighMAC(t, rig.B, ip) == newMAC
		})
		learned[ip.Is4()] = time.Since(start)
		t.Logf("B's kernel had A's new MAC for %v %v after the change", ip, learned[ip.Is4()])
	}
	for i, f := range flows {
		took := f.arrivedAfter(t, start, 10*time.Second)
		t.Logf("%s reached A's new MAC %v after the change", f.name, took)
		if i < 2 && took > learned[i == 0]+300*time.Millisecond {
			t.Errorf("%s reached A's new MAC %v after the change, %v after B's kernel had it: want at once",
				f.name, took, took-learned[i == 0])
		}
	}
}

// neighMAC returns the link-layer address of host h's neighbour entry of
// ip on its link, "" when it has none.
func neighMAC(t *testing.T, h *nstest.Host, ip netip.Addr) string {
	t.Helper()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	mac := ""
	if err := h.Do(func() error {
		ns, err := netlink.NeighList(h.IfIndex, fam)
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) > 0 {
				mac = n.HardwareAddr.String()
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}
