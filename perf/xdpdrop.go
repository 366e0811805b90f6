package main

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// XDPDrop is the floor: an XDP program on the receiving interface that
// drops every IPv4/UDP frame to the generator's port and counts it in a
// per-CPU array, so "delivered" is what the program dropped. Anything else
// (ARP, other ports) passes to the kernel.
type XDPDrop struct {
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
	ncpu   int
	final  uint64 // the count when Stop closed the map
	// generic attaches the program in generic mode instead of native.
	generic bool
}

// NewXDPDrop returns the XDP_DROP floor.
func NewXDPDrop() *XDPDrop { return &XDPDrop{} }

func (x *XDPDrop) Name() string { return ImplXDPDrop }

// xdpDropInstructions is the program: bounds check 42 bytes, IPv4 (IHL 5,
// as the generator builds), UDP, destination port; then count and drop.
func xdpDropInstructions(countsFD int, port uint16) asm.Instructions {
	var portBE [2]byte
	binary.BigEndian.PutUint16(portBE[:], port)
	// Loads read the packet in host (little-endian) order.
	portImm := int32(binary.LittleEndian.Uint16(portBE[:]))
	const (
		xdpDrop = 1
		xdpPass = 2
	)
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // ctx->data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // ctx->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 42),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // ethertype
		asm.JNE.Imm(asm.R5, 0x0008, "pass"),       // htons(ETH_P_IP)
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte), // version+IHL
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 23, asm.Byte), // protocol
		asm.JNE.Imm(asm.R5, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 36, asm.Half), // UDP destination port
		asm.JNE.Imm(asm.R5, portImm, "pass"),
		asm.StoreImm(asm.R10, -4, 0, asm.Word), // key 0
		asm.LoadMapPtr(asm.R1, countsFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord), // per-CPU: no atomics needed
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// Start loads the program and attaches it (native mode) to env's interface.
func (x *XDPDrop) Start(env *Env) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count cpus: %w", err)
	}
	x.ncpu = ncpu
	x.counts, err = ebpf.NewMap(&ebpf.MapSpec{Name: "perf_drops", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create drop counter: %w", err)
	}
	x.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "perf_xdp_drop", Type: ebpf.XDP, License: "GPL",
		Instructions: xdpDropInstructions(x.counts.FD(), env.Port),
	})
	if err != nil {
		x.Stop()
		return fmt.Errorf("load xdp drop program: %w", err)
	}
	flags := link.XDPDriverMode
	if x.generic {
		flags = link.XDPGenericMode
	}
	err = env.Do(func() (err error) {
		x.link, err = link.AttachXDP(link.XDPOptions{Program: x.prog, Interface: env.IfIndex, Flags: flags})
		return err
	})
	if err != nil {
		x.Stop()
		return fmt.Errorf("attach xdp to %s: %w", env.IfName, err)
	}
	return nil
}

// Delivered sums the per-CPU drop counters (after Stop: their last sum).
func (x *XDPDrop) Delivered() uint64 {
	if x.counts == nil {
		return x.final
	}
	vals := make([]uint64, x.ncpu)
	if err := x.counts.Lookup(uint32(0), &vals); err != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n
}

// Stop detaches the program, keeps the final count and closes the map.
func (x *XDPDrop) Stop() error {
	var errs []error
	if x.link != nil {
		errs = append(errs, x.link.Close())
		x.link = nil
	}
	if x.prog != nil {
		errs = append(errs, x.prog.Close())
		x.prog = nil
	}
	if x.counts != nil {
		x.final = x.Delivered()
		errs = append(errs, x.counts.Close())
		x.counts = nil
	}
	return errors.Join(errs...)
}
