package main

// Loss accounting. A receive repetition's loss (sent − delivered) is
// explained by counters that each count a datagram the generator handed
// to the kernel and nobody delivered, at one place on its way:
//
//   - rig (every implementation): B's veth rx_dropped (B's receive path
//     dropped it: the per-CPU backlog without XDP or with XDP in generic
//     mode, an XDP redirect that failed in native mode, an XDP frame of
//     the XDP generator B's ring had no room for; a backlog drop of a
//     frame is also in the sender's tx_dropped, so since takes those out
//     where B receives in its backlog, and so is a refused XDP frame,
//     which is not sent again), and A's tx_dropped (the veth hand-over
//     refused the frame: the peer's ring or backlog was full) where the
//     sender is a socket (the echo client). The generator's frames are
//     not lost
//     there: veth frees a frame it refuses at once, and the packet
//     socket then hands the slot back to the ring with ENOBUFS, to go
//     out with the next call, so tx_dropped counts attempts. It is shown
//     in the breakdown as veth-a-tx-retried (a receive repetition with
//     13,502 of them lost 146 frames, B's rx_dropped);
//   - kernel sockets: B's UDP InErrors from /proc/net/snmp, read in B's
//     netns (it includes RcvbufErrors: a full socket receive buffer, and
//     InCsumErrors), and NoPorts (no socket bound);
//   - echo: the same for the replies (B tx_dropped, A rx_dropped, A's UDP
//     InErrors and NoPorts: the client's socket), and the echo server's
//     failed sends;
//   - xsessiond: the daemon's per-queue drop reasons (no-session,
//     fifo-full, bad checksum, ...) for frames its workers received. The
//     AF_XDP socket's own counters (rx_dropped, rx_ring_full,
//     rx_fill_ring_empty_descs) are printed as the breakdown of B's
//     rx_dropped in native mode: in copy mode a frame the socket could not
//     take fails the redirect, which veth counts in rx_dropped, so adding
//     them again would count those frames twice. In generic mode the
//     kernel frees such a frame without a device counter, so rx_dropped
//     (which includes the fill ring empty in copy mode) and rx_ring_full
//     are counted.
//
// The generator's own send failures are not losses: a frame the kernel
// rejected as malformed is not counted as sent (it is shown in the
// breakdown), and a transient sendto failure leaves the frames on the
// ring, which go out with the next call. The echo client counts only the
// requests its write succeeded for.

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// Drops are the drops counted during a repetition, by counter name.
type Drops map[string]uint64

// Sum is the drops counted in all.
func (d Drops) Sum() uint64 {
	var n uint64
	for _, v := range d {
		n += v
	}
	return n
}

// String lists the non-zero counters in name order.
func (d Drops) String() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if d[k] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, d[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// dropCounter is a receiver that counts drops of its own, beyond the
// rig's (xsessiond's workers). Drops may be called between Start and
// Stop and returns the counts since Start.
type dropCounter interface {
	Drops() Drops
}

// breakdown is a receiver that can say more about where the drops
// happened than the counted set: counters that overlap the counted ones
// (the AF_XDP socket's, inside B's rx_dropped). It is printed, not added.
type breakdown interface {
	Breakdown() Drops
}

// rigCounters are the drop counters of the rig at one instant.
type rigCounters struct {
	aTxDropped, bRxDropped uint64 // A → B
	bTxDropped, aRxDropped uint64 // B → A (echo replies)
	a, b                   udpCounters
}

// udpCounters are one host's UDP counters (/proc/net/snmp).
type udpCounters struct {
	inErrors, noPorts, rcvbufErrors, inCsum uint64
}

// readRigCounters reads the veth ends' counters (netlink, in each host's
// netns) and B's UDP counters (/proc/thread-self/net/snmp on a thread in
// B's netns).
func readRigCounters(p *nstest.Pair) (rigCounters, error) {
	var c rigCounters
	a, err := linkStats(p.A)
	if err != nil {
		return c, err
	}
	b, err := linkStats(p.B)
	if err != nil {
		return c, err
	}
	c.aTxDropped, c.bRxDropped = a.TxDropped, b.RxDropped
	c.bTxDropped, c.aRxDropped = b.TxDropped, a.RxDropped
	if c.a, err = readUDP(p.A); err != nil {
		return c, err
	}
	c.b, err = readUDP(p.B)
	return c, err
}

// readUDP reads h's UDP counters on a thread in its netns.
func readUDP(h *nstest.Host) (udpCounters, error) {
	var c udpCounters
	err := h.Do(func() error {
		raw, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		u, err := parseSNMP(raw, "Udp")
		if err != nil {
			return err
		}
		c = udpCounters{inErrors: u["InErrors"], noPorts: u["NoPorts"], rcvbufErrors: u["RcvbufErrors"], inCsum: u["InCsumErrors"]}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("read %s udp counters: %w", h.Name, err)
	}
	return c, nil
}

func linkStats(h *nstest.Host) (*netlink.LinkStatistics, error) {
	nh, err := netlink.NewHandleAt(h.NS)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", h.Name, err)
	}
	defer nh.Close()
	l, err := nh.LinkByIndex(h.IfIndex)
	if err != nil {
		return nil, fmt.Errorf("read %s link %d: %w", h.Name, h.IfIndex, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		return nil, fmt.Errorf("read %s link %d: no statistics", h.Name, h.IfIndex)
	}
	return s, nil
}

// parseSNMP returns the counters of one protocol line pair ("Udp:" names,
// then "Udp:" values) of /proc/net/snmp.
func parseSNMP(raw []byte, proto string) (map[string]uint64, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		if len(f)-1 != len(names) {
			return nil, fmt.Errorf("parse snmp %s: %d names, %d values", proto, len(names), len(f)-1)
		}
		m := make(map[string]uint64, len(names))
		for i, n := range names {
			v, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse snmp %s %s: %w", proto, n, err)
			}
			m[n] = v
		}
		return m, nil
	}
	return nil, fmt.Errorf("parse snmp: no %s lines", proto)
}

// since is the rig's drops counted between a and c: of datagrams from A
// to B, and with replies (the echo, whose client is a UDP socket) also of
// datagrams from B to A and A's tx_dropped. Without replies the sender is
// the generator, whose frames A's tx_dropped does not lose (genRetried).
//
// A frame the receiving end's backlog refuses is counted twice, in the
// sender's tx_dropped (veth's transmit failed) and in the receiver's
// rx_dropped (the backlog's drop). So the receiver's rx_dropped is taken
// less the sender's tx_dropped where it receives in its backlog: always
// for A, for B with backlogB (no XDP program, or one in generic mode).
// With XDP in native mode a frame veth refuses never reaches B's
// counters, and B's rx_dropped is all B's.
func (c rigCounters) since(a rigCounters, replies, backlogB bool) Drops {
	bRx, aTx := c.bRxDropped-a.bRxDropped, c.aTxDropped-a.aTxDropped
	if backlogB {
		bRx = less(bRx, aTx)
	}
	d := Drops{
		"veth-b-rx-dropped": bRx,
		"udp-b-in-errors":   c.b.inErrors - a.b.inErrors,
		"udp-b-no-ports":    c.b.noPorts - a.b.noPorts,
	}
	if replies {
		bTx := c.bTxDropped - a.bTxDropped
		d["veth-a-tx-dropped"] = aTx
		d["veth-b-tx-dropped"] = bTx
		d["veth-a-rx-dropped"] = less(c.aRxDropped-a.aRxDropped, bTx)
		d["udp-a-in-errors"] = c.a.inErrors - a.a.inErrors
		d["udp-a-no-ports"] = c.a.noPorts - a.a.noPorts
	}
	return d
}

// less is x − y, 0 where y is larger.
func less(x, y uint64) uint64 {
	if y > x {
		return 0
	}
	return x - y
}

// genRetried is the breakdown's count of the generator's frames veth A
// refused and the packet socket sent again (since's comment).
func (c rigCounters) genRetried(a rigCounters) Drops {
	return Drops{"veth-a-tx-retried": c.aTxDropped - a.aTxDropped}
}

// xdpGenRefused is the breakdown's count of the XDP generator's frames
// (gen.XDPGenerator) veth could not put on B's receive ring: veth counts
// each in both A's tx_dropped and B's rx_dropped (peer_tq_xdp_xmit_err of
// B's queue, in both ends' totals), and since counts B's, whole, for XDP
// frames. Nothing sends them again.
func (c rigCounters) xdpGenRefused(a rigCounters) Drops {
	return Drops{"veth-a-xdp-xmit-err": c.aTxDropped - a.aTxDropped}
}

// udpDetail is the part of the UDP InErrors that is a full receive
// buffer and a bad checksum, for the breakdown.
func (c rigCounters) udpDetail(a rigCounters) Drops {
	return Drops{
		"udp-b-rcvbuf-errors": c.b.rcvbufErrors - a.b.rcvbufErrors, "udp-b-in-csum-errors": c.b.inCsum - a.b.inCsum,
		"udp-a-rcvbuf-errors": c.a.rcvbufErrors - a.a.rcvbufErrors, "udp-a-in-csum-errors": c.a.inCsum - a.a.inCsum,
	}
}
