package daemon

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

// The capture stream is what the daemon writes into a capture's pipe, all
// integers little-endian:
//
//	header  "XSCAP1\n\x00", u32 snaplen, u16 queues, u16 len + interface
//	        name, u16 len + daemon version, u16 queue numbers
//	frame   u8 1, u8 direction (0 rx, 1 tx), u16 queue, u16 reason length,
//	        u16 0, u32 app, u32 length on the wire, u32 bytes kept,
//	        i64 unix nanoseconds, u64 handle, then the reason and the bytes
//	end     u8 2, then one u64 per queue of the header: frames the queue's
//	        ring had no room for
//
// CaptureToPcapng turns it into pcapng.

var streamMagic = [8]byte{'X', 'S', 'C', 'A', 'P', '1', '\n', 0}

const (
	recFrame     = 1
	recEnd       = 2
	frameHdrSize = 36
	maxStreamStr = 256
)

// ErrBadStream is returned by CaptureToPcapng for a stream that does not
// follow the format.
var ErrBadStream = errors.New("malformed capture stream")

type streamHeader struct {
	Snaplen uint32
	Iface   string
	Version string
	Queues  []int
}

// streamWriter writes a capture stream without allocating per frame.
type streamWriter struct {
	w   *bufio.Writer
	hdr [frameHdrSize]byte
}

func newStreamWriter(w io.Writer) *streamWriter {
	return &streamWriter{w: bufio.NewWriterSize(w, 256<<10)}
}

func (s *streamWriter) header(h streamHeader) error {
	b := append([]byte(nil), streamMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, h.Snaplen)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.Queues)))
	for _, str := range []string{h.Iface, h.Version} {
		if len(str) > maxStreamStr {
			str = str[:maxStreamStr]
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(len(str)))
		b = append(b, str...)
	}
	for _, q := range h.Queues {
		b = binary.LittleEndian.AppendUint16(b, uint16(q))
	}
	_, err := s.w.Write(b)
	return err
}

func (s *streamWriter) frame(r *datapath.CaptureRecord) error {
	h := &s.hdr
	reason := r.Reason
	if len(reason) > maxStreamStr {
		reason = reason[:maxStreamStr]
	}
	h[0], h[1] = recFrame, byte(r.Dir)
	binary.LittleEndian.PutUint16(h[2:], uint16(r.Queue))
	binary.LittleEndian.PutUint16(h[4:], uint16(len(reason)))
	binary.LittleEndian.PutUint16(h[6:], 0)
	binary.LittleEndian.PutUint32(h[8:], r.App)
	binary.LittleEndian.PutUint32(h[12:], uint32(r.Len))
	binary.LittleEndian.PutUint32(h[16:], uint32(len(r.Data)))
	binary.LittleEndian.PutUint64(h[20:], uint64(r.Time.UnixNano()))
	binary.LittleEndian.PutUint64(h[28:], uint64(r.Handle))
	if _, err := s.w.Write(h[:]); err != nil {
		return err
	}
	if _, err := s.w.WriteString(reason); err != nil {
		return err
	}
	_, err := s.w.Write(r.Data)
	return err
}

func (s *streamWriter) end(lost []uint64) error {
	if err := s.w.WriteByte(recEnd); err != nil {
		return err
	}
	var b [8]byte
	for _, l := range lost {
		binary.LittleEndian.PutUint64(b[:], l)
		if _, err := s.w.Write(b[:]); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamWriter) flush() error { return s.w.Flush() }

// CaptureResult is what CaptureToPcapng read.
type CaptureResult struct {
	Frames int    // frames written
	Lost   uint64 // frames the capture rings had no room for, all queues
	Ended  bool   // the stream ended with its end record (not cut)
}

// CaptureToPcapng reads a capture stream from r until its end record or
// EOF and writes it to w as pcapng: one section; two interfaces per
// queue, IF:qN:rx then IF:qN:tx, link type Ethernet; one enhanced packet
// block per frame with the inbound or outbound flag and a comment ("q0 rx
// handle 0x… app 1", "q0 rx drop no_session"); and, when the stream
// ended, one interface statistics block per rx interface whose dropped
// count is the frames of that queue the capture ring had no room for.
// gopacket's pcapgo.NgWriter writes the section header, interface and
// statistics blocks; the packet blocks are encoded here without
// allocating. Output is buffered and written to w at most
// captureFlushEvery after a frame came, so that a pipe reader sees frames
// as they come (one write per frame would cost a system call per frame at
// high rates), and without a wait when the buffer fills.
func CaptureToPcapng(r io.Reader, w io.Writer) (res CaptureResult, err error) {
	tw := newTimedWriter(w, 256<<10, captureFlushEvery)
	defer func() { err = errors.Join(err, tw.close()) }()
	return captureToPcapng(r, tw)
}

func captureToPcapng(r io.Reader, w *timedWriter) (CaptureResult, error) {
	var res CaptureResult
	br := bufio.NewReaderSize(r, 256<<10)
	bad := func(what string) error { return fmt.Errorf("capture stream: %s: %w", what, ErrBadStream) }
	var magic [8]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return res, fmt.Errorf("capture stream: %w", err)
	}
	if magic != streamMagic {
		return res, bad("bad magic")
	}
	var fixed [6]byte
	if _, err := io.ReadFull(br, fixed[:]); err != nil {
		return res, bad("header cut")
	}
	snap := binary.LittleEndian.Uint32(fixed[:])
	nq := int(binary.LittleEndian.Uint16(fixed[4:]))
	readStr := func() (string, error) {
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return "", bad("header cut")
		}
		n := int(binary.LittleEndian.Uint16(l[:]))
		if n > maxStreamStr {
			return "", bad("string too long")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", bad("header cut")
		}
		return string(b), nil
	}
	iface, err := readStr()
	if err != nil {
		return res, err
	}
	version, err := readStr()
	if err != nil {
		return res, err
	}
	if nq == 0 || snap == 0 || snap > datapath.MaxCaptureLen {
		return res, bad("no queue or bad snaplen")
	}
	queues := make([]int, nq)
	for i := range queues {
		var q [2]byte
		if _, err := io.ReadFull(br, q[:]); err != nil {
			return res, bad("header cut")
		}
		queues[i] = int(binary.LittleEndian.Uint16(q[:]))
	}
	intf := func(q, dir int) pcapgo.NgInterface {
		dn := "rx"
		if dir == datapath.CaptureTx {
			dn = "tx"
		}
		return pcapgo.NgInterface{Name: fmt.Sprintf("%s:q%d:%s", iface, q, dn), OS: runtime.GOOS,
			LinkType: layers.LinkTypeEthernet, SnapLength: snap, TimestampResolution: 9,
			Description: fmt.Sprintf("xsessiond queue %d, %s", q, dn)}
	}
	ng, err := pcapgo.NewNgWriterInterface(w, intf(queues[0], datapath.CaptureRx), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{Hardware: runtime.GOARCH, OS: runtime.GOOS, Application: "xsessiond " + version}})
	if err != nil {
		return res, err
	}
	idx := map[[2]int]int{{queues[0], datapath.CaptureRx}: 0}
	for i, q := range queues {
		for dir := datapath.CaptureRx; dir <= datapath.CaptureTx; dir++ {
			if i == 0 && dir == datapath.CaptureRx {
				continue
			}
			id, err := ng.AddInterface(intf(q, dir))
			if err != nil {
				return res, err
			}
			idx[[2]int{q, dir}] = id
		}
	}
	if err := ng.Flush(); err != nil {
		return res, err
	}
	type commentKey struct {
		q, dir int
		h      flow.Handle
		app    uint32
		reason string
	}
	// The enhanced packet blocks are encoded here, not by
	// ng.WritePacketWithOptions: that builds its options anew for every
	// packet (five allocations a frame, most of the conversion's cost at
	// the datapath's rates, BenchmarkCaptureToPcapng), while a frame's
	// options (its comment, its direction flag) repeat for every frame of
	// a session. Each distinct options part is encoded once, and a block
	// is assembled in blk, the frame read straight into it, and handed
	// to w in one write. pcapgo writes the section header, interface and
	// statistics blocks; ng holds nothing buffered while blocks are
	// written here (it was flushed after the interfaces).
	opts := map[commentKey][]byte{}
	var hdr [frameHdrSize]byte
	reason := make([]byte, maxStreamStr)
	blk := make([]byte, 0, epbFixed+int(snap)+3+4+2*maxStreamStr+16)
	for {
		kind, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			return res, ng.Flush() // cut: no end record
		}
		if err != nil {
			return res, err
		}
		switch kind {
		case recEnd:
			for _, q := range queues {
				var b [8]byte
				if _, err := io.ReadFull(br, b[:]); err != nil {
					return res, bad("end record cut")
				}
				l := binary.LittleEndian.Uint64(b[:])
				res.Lost += l
				if err := ng.WriteInterfaceStats(idx[[2]int{q, datapath.CaptureRx}], pcapgo.NgInterfaceStatistics{
					PacketsReceived: pcapgo.NgNoValue64, PacketsDropped: l}); err != nil {
					return res, err
				}
			}
			res.Ended = true
			return res, ng.Flush()
		case recFrame:
		default:
			return res, bad(fmt.Sprintf("record kind %d", kind))
		}
		hdr[0] = kind
		if _, err := io.ReadFull(br, hdr[1:]); err != nil {
			return res, bad("frame record cut")
		}
		dir, q := int(hdr[1]), int(binary.LittleEndian.Uint16(hdr[2:]))
		rl := int(binary.LittleEndian.Uint16(hdr[4:]))
		app := binary.LittleEndian.Uint32(hdr[8:])
		wire := binary.LittleEndian.Uint32(hdr[12:])
		kept := int(binary.LittleEndian.Uint32(hdr[16:]))
		ns := binary.LittleEndian.Uint64(hdr[20:])
		h := flow.Handle(binary.LittleEndian.Uint64(hdr[28:]))
		id, ok := idx[[2]int{q, dir}]
		if !ok || rl > maxStreamStr || kept > int(snap) || uint32(kept) > wire {
			return res, bad("frame record fields")
		}
		if _, err := io.ReadFull(br, reason[:rl]); err != nil {
			return res, bad("frame record cut")
		}
		blk = blk[:epbFixed+kept]
		if _, err := io.ReadFull(br, blk[epbFixed:]); err != nil {
			return res, bad("frame record cut")
		}
		k := commentKey{q, dir, h, app, string(reason[:rl])}
		o := opts[k]
		if o == nil {
			if len(opts) >= 4096 {
				clear(opts)
			}
			dn, flags := "rx", pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
			if dir == datapath.CaptureTx {
				dn, flags = "tx", pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
			}
			c := fmt.Sprintf("q%d %s handle %#x app %d", q, dn, uint64(h), app)
			if rl > 0 && h != 0 {
				c += " drop " + k.reason // fifo_full, too_big, fifo_corrupt: the listener or session it was for
			} else if rl > 0 {
				c = fmt.Sprintf("q%d %s drop %s", q, dn, k.reason)
			}
			o = epbOptions(c, flags.ToUint32())
			opts[k] = o
		}
		total := uint32(len(blk)+pad4(kept)+len(o)) + 4
		le := binary.LittleEndian
		le.PutUint32(blk[0:], ngBlockEPB)
		le.PutUint32(blk[4:], total)
		le.PutUint32(blk[8:], uint32(id))
		le.PutUint32(blk[12:], uint32(ns>>32)) // the interfaces' resolution is nanoseconds
		le.PutUint32(blk[16:], uint32(ns))
		le.PutUint32(blk[20:], uint32(kept))
		le.PutUint32(blk[24:], wire)
		blk = append(blk, zeros[:pad4(kept)]...)
		blk = append(blk, o...)
		blk = le.AppendUint32(blk, total)
		if _, err := w.Write(blk); err != nil {
			return res, err
		}
		res.Frames++
	}
}

// The pcapng enhanced packet block (RFC draft-ietf-opsawg-pcapng): type 6,
// total length, interface, timestamp high and low, captured and original
// length (epbFixed bytes), the frame padded to 4, options, total length
// again; little-endian, as pcapgo writes the section.
const (
	ngBlockEPB   = 6
	epbFixed     = 28
	ngOptEnd     = 0
	ngOptComment = 1
	ngOptFlags   = 2
)

var zeros [4]byte

func pad4(n int) int { return (4 - n&3) & 3 }

// epbOptions encodes an enhanced packet block's options: a comment, the
// epb_flags word, the end of options.
func epbOptions(comment string, flags uint32) []byte {
	le := binary.LittleEndian
	b := le.AppendUint16(nil, ngOptComment)
	b = le.AppendUint16(b, uint16(len(comment)))
	b = append(b, comment...)
	b = append(b, zeros[:pad4(len(comment))]...)
	b = le.AppendUint16(b, ngOptFlags)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, flags)
	return le.AppendUint32(b, ngOptEnd) // code 0, length 0
}

// captureFlushEvery bounds how long a converted frame waits in
// CaptureToPcapng's output buffer.
const captureFlushEvery = 20 * time.Millisecond

// timedWriter buffers writes to w and writes them out when the buffer
// fills, on close, and (from a timer) at most its every after the first
// write since the last write-out. An error of a timed write-out is returned by
// the next Write or close. Safe for one writer beside its timer.
type timedWriter struct {
	every time.Duration
	mu    sync.Mutex
	bw    *bufio.Writer
	armed bool  // a timed write-out is pending
	err   error // of a timed write-out
	timer *time.Timer
}

func newTimedWriter(w io.Writer, size int, every time.Duration) *timedWriter {
	t := &timedWriter{every: every, bw: bufio.NewWriterSize(w, size)}
	t.timer = time.AfterFunc(time.Hour, t.timed)
	t.timer.Stop()
	return t
}

func (t *timedWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.bw.Write(p)
	if err == nil && !t.armed && t.bw.Buffered() > 0 {
		t.armed = true
		t.timer.Reset(t.every)
	}
	return n, err
}

func (t *timedWriter) timed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = false
	if t.err == nil {
		t.err = t.bw.Flush()
	}
}

// close writes out what is buffered and stops the timer.
func (t *timedWriter) close() error {
	t.timer.Stop()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = false
	if t.err != nil {
		return t.err
	}
	return t.bw.Flush()
}
