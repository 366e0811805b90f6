package datapath

import (
	"time"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/flow"
)

// Fragments of UDP datagrams for the ports the daemon serves.
//
// The XDP program sends every fragment of a datagram to one place: when the
// first fragment it sees of a datagram is its first fragment (offset 0) and
// that one's ports hit a listener or session, the datagram is marked as the
// daemon's and all its fragments come to the queue's worker; otherwise
// (another port, or a later fragment first: reordered) they all go to the
// kernel, which reassembles them and delivers the datagram to the port's
// socket: another program's, or the daemon's reservation (the kernel path,
// kernelpath.go). See bpf/xsession.c.
//
// The worker reassembles its fragments with a reasm.Reassembler, which
// follows Linux's rules (duplicates ignored, overlaps drop the datagram as
// RFC 5722 asks) within its bounds (Config.Reassembly), then checks the
// datagram's UDP header and checksum like a whole one's and delivers it as
// the frames of the batch are delivered: its payload sits in the
// Reassembler's buffer until the batch is queued (reasm.Release).

// reasmDrops maps the reassembler's drop results to the worker's drop
// reasons.
var reasmDrops = [...]int{
	reasm.Duplicate:        dropReasmDuplicate,
	reasm.BadFragment:      dropReasmBadFragment,
	reasm.TooLong:          dropReasmTooLong,
	reasm.Corrupt:          dropReasmCorrupt,
	reasm.Overlap:          dropReasmOverlap,
	reasm.TooManyFragments: dropReasmTooMany,
	reasm.NoBuffer:         dropReasmNoBuffer,
}

// fragment hands the fragment frame f (decoded into w.pkt) to the
// reassembler. When it completes a datagram, fragment decodes it into
// w.pkt and returns it (UDP header on); nil otherwise, with the fragment
// counted.
func (w *worker) fragment(f []byte) []byte {
	p := &w.pkt
	w.c.Fragments++
	w.cap.rx(w.q, f, nil)
	if w.reasm == nil {
		w.reasm = reasm.New(w.e.cfg.Reassembly)
	}
	// An IPv6 datagram's fragments are one datagram whatever next header
	// the later ones name (isUDPFragment): the key's transport is UDP's.
	k := reasm.Key{Src: p.Src, Dst: p.Dst, ID: p.FragID, Ifindex: uint32(w.e.ifc.Index), Family: p.Family, Proto: uint8(flow.TransportUDP)}
	end := p.PayloadOff + p.PayloadLen
	if p.PayloadOff < 0 || end > len(f) {
		w.c.Bad[frame.TruncatedIP]++
		return nil
	}
	dg, r := w.reasm.Add(&k, int(p.FragOffset), p.MoreFrags, f[p.PayloadOff:end], p.FragMaxEnd, w.clock())
	switch {
	case r == reasm.Pending:
		return nil
	case r == reasm.Done:
	case int(r) < len(reasmDrops) && reasmDrops[r] != 0:
		w.c.Drops[reasmDrops[r]]++
		return nil
	default:
		w.c.Drops[dropReasmCorrupt]++
		return nil
	}
	w.c.Reassembled++
	p.Proto = flow.TransportUDP // the fragment that completed it may name another
	if r := frame.DecodeDatagram(dg, p); r != frame.OK {
		w.c.Bad[r]++
		return nil
	}
	return dg
}

// clock returns the worker's monotonic time in ns, read once per batch.
func (w *worker) clock() int64 {
	if w.now == 0 {
		w.now = int64(time.Since(w.epoch)) | 1
	}
	return w.now
}

// expireFragments drops the datagrams whose fragments waited longer than
// the reassembly timeout; a no-op while none is held.
func (w *worker) expireFragments() {
	if w.reasm == nil || w.reasm.Stats().InFlight == 0 {
		return
	}
	w.reasm.Expire(int64(time.Since(w.epoch)))
	w.reasmStats()
}

// reasmStats copies the reassembler's datagram counts (evicted, timed
// out) and gauges into the worker's counters.
func (w *worker) reasmStats() {
	s := w.reasm.Stats()
	w.c.Drops[dropReasmEvicted] = s.Evicted
	w.c.Drops[dropReasmTimeout] = s.TimedOut
	w.c.ReasmInFlight, w.c.ReasmHeld = uint64(s.InFlight), uint64(s.Held)
}

// isUDPFragment reports whether w.pkt, decoded as r, is a fragment of a
// UDP datagram. An IPv6 fragment after the first is taken as one whatever
// next header its fragment header names: Linux's reassembly takes the
// datagram's from the first fragment and ignores the others' (the XDP
// program steers them alike). An IPv4 fragment's protocol is part of its
// datagram's identity, here as in the kernel.
func (w *worker) isUDPFragment(r frame.Reason) bool {
	return r == frame.Fragment && (w.pkt.Proto == flow.TransportUDP || w.pkt.Family == flow.Family6 && w.pkt.FragOffset > 0)
}
