package daemon

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// dropRandomly makes host h's veth end lose about one frame in every
// each way: a clsact qdisc with a bpf filter on egress and on ingress
// that drops a frame when bpf_get_prandom_u32() % every == 0. (netem is
// what one would use; the kernels the tests run on may be built without
// it, and cls_bpf is always there.)
func dropRandomly(t *testing.T, h *nstest.Host, every int32) {
	t.Helper()
	nh, err := netlink.NewHandleAt(h.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: h.IfIndex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := nh.QdiscAdd(q); err != nil {
		t.Fatalf("add clsact on %s: %v", h.Link, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.Mod.Imm32(asm.R0, every),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.LoadImm(asm.R0, int64(netlink.TC_ACT_OK), asm.DWord),
			asm.Return(),
			asm.LoadImm(asm.R0, int64(netlink.TC_ACT_SHOT), asm.DWord).WithSymbol("drop"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatalf("load loss program: %v", err)
	}
	defer prog.Close() // the filters hold their own references
	for i, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: h.IfIndex, Parent: parent,
			Handle: netlink.MakeHandle(0, uint16(i+1)), Protocol: unix.ETH_P_ALL, Priority: 1}, Fd: prog.FD(), Name: "loss", DirectAction: true}
		if err := nh.FilterAdd(f); err != nil {
			t.Fatalf("add loss filter on %s: %v", h.Link, err)
		}
	}
}

// TestTCPLossKernel: with host A's veth losing about 1% of the frames each
// way, an app on B dialling a kernel echo server on A moves 100 MiB each
// way exact, and gVisor's retransmissions show the loss was there. (The
// issue's netem also delays and reorders; this kernel has no netem, so
// this is loss only. The in-process test of datapath/tcp adds reorder.)
func TestTCPLossKernel(t *testing.T) {
	const size = 100 << 20
	rig, d := tcpRig(t)
	var kl net.Listener
	if err := rig.A.Do(func() error {
		var err error
		kl, err = net.Listen("tcp", ":7800")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	go echoServe(kl)
	a := attach(t, d, app.Options{Name: "lossy", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7800).String())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dropRandomly(t, rig.A, 100)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	before := d.Engine().TCPStats().Retransmits
	start := time.Now()
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, werr = c.Write(data)
	}()
	got := make([]byte, size)
	_, rerr := io.ReadFull(c, got)
	wg.Wait()
	if werr != nil || rerr != nil {
		t.Fatalf("write %v, read %v after %v", werr, rerr, time.Since(start))
	}
	if !bytes.Equal(got, data) {
		t.Fatal(errEcho)
	}
	rt := d.Engine().TCPStats().Retransmits - before
	t.Logf("100 MiB each way through 1%% loss in %v; %d segments retransmitted by gVisor", time.Since(start), rt)
	if rt == 0 {
		t.Fatal("no retransmission: the loss filter did not act")
	}
}
