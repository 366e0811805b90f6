package gen

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Frames per BPF_PROG_TEST_RUN call when sending flat out. Each call sets
// up and tears down a page pool, which takes ~20 ms of wall time on the
// hosts measured (the CPU idles meanwhile), so a call sends as many frames
// as take xdpCallTarget, learnt from the calls before.
const (
	xdpFirstBatch = 4096
	xdpMaxBatch   = 1 << 22
	xdpCallTarget = 200 * time.Millisecond
)

// XDPGenerator sends pre-built frames as XDP frames: an XDP program run
// with BPF_F_TEST_XDP_LIVE_FRAMES returns XDP_TX for every frame, so the
// kernel hands each one to the interface's ndo_xdp_xmit. On a veth that is
// the peer's receive ring, read by the peer's NAPI: the frames reach host
// B as a native-XDP NIC's would, with no socket buffer built in host A and
// none copied for host B's XDP program. The peer must have NAPI on its
// receive queues (an XDP program attached in native mode, or GRO on);
// otherwise the kernel drops every frame at the peer's ring.
//
// The receive queue is chosen by the sending CPU (veth's ndo_xdp_xmit),
// not by a flow hash, so one XDPGenerator feeds one queue of host B.
type XDPGenerator struct {
	prog    *ebpf.Program
	count   *ebpf.Map // one u64: the program's runs
	frames  [][]byte
	ifindex int
	rate    uint64
	batch   int // fixed frames per call; 0: learnt (flat out) or what is due (paced)

	final  atomic.Uint64 // Sent's last reading, kept when Close unloads the counter
	closed atomic.Bool
}

// NewXDP loads the generator's program in the calling thread's network
// namespace, for frames sent on cfg.IfIndex. cfg.Batch, when set, is the
// most frames per test run; RingFrames is not used.
func NewXDP(cfg Config) (*XDPGenerator, error) {
	frames, err := cfg.frames()
	if err != nil {
		return nil, err
	}
	count, err := ebpf.NewMap(&ebpf.MapSpec{Name: "gen_count", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create generator counter: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "gen_tx",
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: txProgram(count),
	})
	if err != nil {
		count.Close()
		return nil, fmt.Errorf("load generator program: %w", err)
	}
	return &XDPGenerator{prog: prog, count: count, frames: frames, ifindex: cfg.IfIndex, rate: cfg.Rate, batch: cfg.Batch}, nil
}

// txProgram counts a run in count's one slot and returns XDP_TX.
func txProgram(count *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word), // key 0
		asm.LoadMapPtr(asm.R1, count.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, int32(xdpTX)).WithSymbol("out"),
		asm.Return(),
	}
}

const xdpTX = 3 // enum xdp_action XDP_TX

// Sent is the frames the program has passed to the interface, read from
// the program's counter (exact also while a test run is going). A frame
// the peer's ring refuses is in Sent and in the sending veth's tx_dropped.
// It is the last count read if the counter cannot be read.
func (g *XDPGenerator) Sent() uint64 {
	if g.closed.Load() {
		return g.final.Load()
	}
	var runs uint64
	if err := g.count.Lookup(uint32(0), &runs); err != nil {
		return g.final.Load()
	}
	g.final.Store(runs)
	return runs
}

// Errors is always zero: the frames are built by the generator and the
// kernel does not check them on the way out.
func (g *XDPGenerator) Errors() uint64 { return 0 }

// Run sends until ctx is done and returns; the call under way when ctx is
// done finishes first. The flows take turns, a test run each. Run must be
// called on a thread in the namespace NewXDP ran in. It returns an error
// only when a test run fails.
func (g *XDPGenerator) Run(ctx context.Context) error {
	pace := newPacer(g.rate)
	learnt := uint64(xdpFirstBatch)
	ctxIn := &xdpMD{IngressIfindex: uint32(g.ifindex)}
	for flow := 0; ctx.Err() == nil; flow = (flow + 1) % len(g.frames) {
		n := learnt
		if g.batch > 0 {
			n = uint64(g.batch)
		}
		if n = pace.allow(n); n == 0 {
			continue
		}
		ctxIn.DataEnd = uint32(len(g.frames[flow]))
		t0 := time.Now()
		_, err := g.prog.Run(&ebpf.RunOptions{
			Data:      g.frames[flow],
			Repeat:    uint32(n),
			Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context:   ctxIn,
			BatchSize: uint32(min(n, 64)),
		})
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("send XDP frames: %w", err)
		}
		if took := time.Since(t0); took > 0 {
			learnt = min(xdpMaxBatch, max(xdpFirstBatch, uint64(float64(n)*float64(xdpCallTarget)/float64(took))))
		}
	}
	return nil
}

// xdpMD is struct xdp_md as BPF_PROG_TEST_RUN takes it: data and
// data_meta must be 0, data_end the frame's length.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Close unloads the program and its counter; Sent keeps its last count.
// Run must have returned.
func (g *XDPGenerator) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	var runs uint64
	if err := g.count.Lookup(uint32(0), &runs); err == nil {
		g.final.Store(runs)
	}
	return errors.Join(g.prog.Close(), g.count.Close())
}
