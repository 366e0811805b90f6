package datapath

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/flow"
)

// Capture copies the frames the workers receive and send into one ring
// per queue, for a reader (ctl capture) to drain.
//
// Cost: a worker loads the Engine's capture pointer once per loop; with
// no capture running every hook is one nil test. With one running, a
// hook that matches the filter copies the frame into the next free slot
// of its queue's ring without blocking: a full ring counts the frame in
// Lost and moves on, so the datapath never waits for the reader.
//
// A received frame for a listener or session is captured as its run of
// datagrams is queued in the app's rx fifo: delivered (no reason), or
// with the reason the fifo refused it (fifo_full, too_big,
// fifo_corrupt). Frames keep the order they were received in. TCP frames
// are captured as the worker hands them to the Stack, and the Stack's
// packets as the worker sends them (while a capture runs, none is written
// past the worker, tcpWorker.direct); they carry no handle or app, so a
// capture filtered by listener, session or app leaves them out.
//
// Each ring has one producer (its worker) and one consumer (Read);
// Read and Stop are safe from one goroutine other than the workers.
type Capture struct {
	filter CaptureFilter
	rings  []*capRing    // by queue; nil for queues without a worker
	rec    CaptureRecord // Read's, reused
}

// CaptureFilter selects the frames of a Capture; zero fields do not
// filter, and the fields that are set must all match.
type CaptureFilter struct {
	Handle flow.Handle // frames of this listener or session
	App    uint32      // frames of this app's listeners and sessions
	// Reason keeps the dropped frames of this reason (a snake_case drop
	// reason as show stats names it, e.g. "no_session",
	// "bad_udp_csum"), or of any reason when "any".
	Reason string
	// Snaplen bounds the bytes kept of each frame; 0: the longest frame
	// the interface's MTU allows; at most MaxCaptureLen.
	Snaplen int
	// Slots is the number of frames each queue's ring holds (rounded up
	// to a power of two); 0: DefaultCaptureSlots.
	Slots int
}

// Capture defaults and limits.
const (
	DefaultCaptureSlots = 4096
	MaxCaptureSlots     = 1 << 16
	MaxCaptureLen       = 4096 // a UMEM frame
)

// Capture directions.
const (
	CaptureRx = 0
	CaptureTx = 1
)

// ErrCaptureBusy is returned by StartCapture while another capture runs.
var ErrCaptureBusy = errors.New("a capture is already running")

// CaptureRecord is one captured frame, valid until the next Read callback
// returns.
type CaptureRecord struct {
	Queue  int
	Dir    int // CaptureRx or CaptureTx
	Time   time.Time
	Handle flow.Handle // the listener or session, 0: none (a drop before lookup)
	App    uint32
	Reason string // the drop reason, "" for a frame delivered or sent
	Len    int    // the frame's length on the wire
	Data   []byte // its first Snaplen bytes
}

// capRing is one queue's ring: the worker writes tail, the reader head.
type capRing struct {
	slots []capSlot
	mask  uint64
	head  atomic.Uint64 // next slot to read; written by the reader
	tail  atomic.Uint64 // next slot to write; written by the worker
	lost  atomic.Uint64 // frames that found the ring full
	now   int64         // the worker's clock, read once per loop (captureFor); worker only
}

type capSlot struct {
	ns     int64
	dir    uint8
	handle flow.Handle
	app    uint32
	reason string
	len    int
	n      int
	data   []byte
}

// StartCapture starts capturing the frames that match f; Stop ends it.
// One capture runs at a time.
func (e *Engine) StartCapture(f CaptureFilter) (*Capture, error) {
	if e.capture.Load() != nil {
		// Refused before its rings (megabytes a queue) are made; the
		// swap below settles a race with another start.
		return nil, fmt.Errorf("start capture: %w", ErrCaptureBusy)
	}
	if f.Snaplen <= 0 {
		// The longest frame the interface's MTU allows (two VLAN tags),
		// rounded to a cache line.
		f.Snaplen = MaxCaptureLen
		if mtu := int(e.mtu.Load()); mtu > 0 {
			f.Snaplen = (mtu + frame.EthHeaderLen + 8 + 63) &^ 63
		}
	}
	f.Snaplen = min(f.Snaplen, MaxCaptureLen)
	slots := f.Slots
	if slots <= 0 {
		slots = DefaultCaptureSlots
	}
	slots = min(slots, MaxCaptureSlots)
	n := 1
	for n < slots {
		n <<= 1
	}
	maxQ := 0
	for _, w := range e.work {
		maxQ = max(maxQ, w.q)
	}
	c := &Capture{filter: f, rings: make([]*capRing, maxQ+1)}
	for _, w := range e.work {
		r := &capRing{slots: make([]capSlot, n), mask: uint64(n - 1)}
		buf := make([]byte, n*f.Snaplen)
		for i := range r.slots {
			r.slots[i].data = buf[i*f.Snaplen : (i+1)*f.Snaplen : (i+1)*f.Snaplen]
		}
		c.rings[w.q] = r
	}
	if !e.capture.CompareAndSwap(nil, c) {
		return nil, fmt.Errorf("start capture: %w", ErrCaptureBusy)
	}
	return c, nil
}

// Stop ends the capture: the workers stop writing to it within a loop.
// What the rings hold can still be Read.
func (e *Engine) StopCapture(c *Capture) {
	e.capture.CompareAndSwap(c, nil)
}

// Snaplen returns the bytes kept of each frame.
func (c *Capture) Snaplen() int { return c.filter.Snaplen }

// Queues returns the queues the capture has a ring for.
func (c *Capture) Queues() []int {
	var qs []int
	for q, r := range c.rings {
		if r != nil {
			qs = append(qs, q)
		}
	}
	return qs
}

// Lost returns the frames that matched but found their ring full.
func (c *Capture) Lost() uint64 {
	var n uint64
	for _, r := range c.rings {
		if r != nil {
			n += r.lost.Load()
		}
	}
	return n
}

// QueueLost returns the frames of queue q that found its ring full.
func (c *Capture) QueueLost(q int) uint64 {
	if q < 0 || q >= len(c.rings) || c.rings[q] == nil {
		return 0
	}
	return c.rings[q].lost.Load()
}

// CaptureReasons returns the drop reasons a CaptureFilter may name.
func CaptureReasons() []string {
	out := append([]string(nil), reasonNames[1:]...)
	return append(out, dropSnake[:]...)
}

// Read calls fn with every frame the rings hold, oldest first per ring,
// until fn returns false; it returns the number of frames read.
func (c *Capture) Read(fn func(*CaptureRecord) bool) int {
	n := 0
	rec := &c.rec
	for q, r := range c.rings {
		if r == nil {
			continue
		}
		head, tail := r.head.Load(), r.tail.Load()
		for ; head != tail; head++ {
			s := &r.slots[head&r.mask]
			*rec = CaptureRecord{Queue: q, Dir: int(s.dir), Time: time.Unix(0, s.ns), Handle: s.handle, App: s.app,
				Reason: s.reason, Len: s.len, Data: s.data[:s.n]}
			n++
			ok := fn(rec)
			r.head.Store(head + 1)
			if !ok {
				return n
			}
		}
	}
	return n
}

// captureFor returns the capture running, nil when none (one atomic
// load), and reads the clock for the frames queue q captures until its
// next call: a worker calls it once per loop, so that a capture costs
// one clock read per batch, not per frame.
func (e *Engine) captureFor(q int) *Capture {
	c := e.capture.Load()
	if c != nil && q < len(c.rings) && c.rings[q] != nil {
		c.rings[q].now = time.Now().UnixNano()
	}
	return c
}

// The hooks the worker calls, each a nil test when no capture runs.

// rx captures a received frame delivered towards t.
func (c *Capture) rx(q int, f []byte, t *udp.Target) {
	if c != nil {
		c.put(q, CaptureRx, f, t, "")
	}
}

// rxBad captures a received frame the decoder refused.
func (c *Capture) rxBad(q int, f []byte, r frame.Reason) {
	if c != nil {
		c.put(q, CaptureRx, f, nil, reasonNames[r])
	}
}

// rxDrop captures a received frame dropped by the worker for why, on its
// way to t (nil: dropped before a Target was found).
func (c *Capture) rxDrop(q int, f []byte, t *udp.Target, why int) {
	if c != nil {
		c.put(q, CaptureRx, f, t, dropSnake[why])
	}
}

// tx captures a frame put on the tx ring for t.
func (c *Capture) tx(q int, f []byte, t *udp.Target) {
	if c != nil {
		c.put(q, CaptureTx, f, t, "")
	}
}

// reasonNames and dropSnake are the drop reasons as the capture and show
// stats name them.
var (
	reasonNames [frame.NumReasons]string
	dropSnake   [numDrops]string
)

func init() {
	for r := range reasonNames {
		reasonNames[r] = strings.ReplaceAll(frame.Reason(r).String(), "-", "_")
	}
	for i, n := range dropNames {
		dropSnake[i] = strings.ReplaceAll(n, "-", "_")
	}
}

func (c *Capture) put(q int, dir uint8, f []byte, t *udp.Target, reason string) {
	if r, sl := c.reserve(q, dir, t, reason, len(f)); sl != nil {
		sl.n = copy(sl.data, f)
		r.tail.Store(r.tail.Load() + 1)
	}
}

// txParts captures a frame sent in parts (its Ethernet header first) that
// are wire bytes long in all: a TCP packet written to the packet socket,
// which may be larger than a frame (the kernel segments it) and is kept
// up to the snaplen.
func (c *Capture) txParts(q int, parts [][]byte, wire int) {
	if c == nil {
		return
	}
	if r, sl := c.reserve(q, CaptureTx, nil, "", wire); sl != nil {
		n := 0
		for _, p := range parts {
			if n == len(sl.data) {
				break
			}
			n += copy(sl.data[n:], p)
		}
		sl.n = n
		r.tail.Store(r.tail.Load() + 1)
	}
}

// reserve returns queue q's ring and its next slot, its header filled in,
// when the frame matches the filter and the ring has room (a full ring
// counts it lost); the caller copies the frame in and publishes the slot
// by advancing the ring's tail.
func (c *Capture) reserve(q int, dir uint8, t *udp.Target, reason string, wire int) (*capRing, *capSlot) {
	fl := &c.filter
	var h flow.Handle
	var app uint32
	if t != nil {
		h, app = t.Handle, uint32(t.App)
	}
	if (fl.Handle != 0 && fl.Handle != h) || (fl.App != 0 && fl.App != app) {
		return nil, nil
	}
	if fl.Reason != "" && (reason == "" || (fl.Reason != "any" && fl.Reason != reason)) {
		return nil, nil
	}
	if q < 0 || q >= len(c.rings) || c.rings[q] == nil {
		return nil, nil
	}
	r := c.rings[q]
	tail := r.tail.Load()
	if tail-r.head.Load() > r.mask {
		r.lost.Add(1)
		return nil, nil
	}
	sl := &r.slots[tail&r.mask]
	sl.ns = r.now
	sl.dir, sl.handle, sl.app, sl.reason, sl.len = dir, h, app, reason, wire
	return r, sl
}
