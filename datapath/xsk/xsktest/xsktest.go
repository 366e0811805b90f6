// Package xsktest loads a minimal XDP program for AF_XDP tests: it
// redirects IPv4 UDP datagrams (header length 20) to one destination port
// into an XSKMAP indexed by the receiving queue, and passes everything else
// (ARP, ICMP, other ports) to the kernel. The real program lives in bpf/ and
// loader/; this one is written with cilium/ebpf/asm so the xsk tests do not
// depend on them.
//
// What veth needs on Linux 6.18, as observed in the tests: native XDP
// (XDPDriverMode) on a veth end sees the datagrams the peer's kernel stack
// sends once a program is attached (attaching gives the end its NAPI
// context; the peer needs no program). But the peer's tx checksum offload is
// on by default, and its UDP skbs are CHECKSUM_PARTIAL: the checksum field
// holds only the pseudo-header's partial sum. An AF_XDP socket receives the
// frame without the skb's checksum state, so a verifying decoder reports
// bad-udp-csum for every datagram. DisableTxOffload turns tx checksumming
// (and with it TSO) off on the sending end, so the peer writes complete
// checksums; AttachRedirect does so for the peer when asked. Frames sent
// from an AF_XDP socket on veth (copy mode: veth has no zero-copy support,
// XDP_ZEROCOPY fails with EOPNOTSUPP) reach the peer's stack through its
// ordinary receive path and need nothing special.
//
// Everything is released in t.Cleanup.
package xsktest

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// Redirect is the loaded program, its XSKMAP and the XDP link.
type Redirect struct {
	Map  *ebpf.Map
	Prog *ebpf.Program
	Link link.Link
}

// Instructions returns the program: IPv4/UDP to dport goes to
// xsks[rx_queue_index], or to the kernel when that entry is empty.
func Instructions(xsks *ebpf.Map, dport uint16) asm.Instructions {
	// Loads from packet memory are little-endian on the hosts we run on:
	// compare with the network-order bytes read that way.
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], dport)
	portLE := int32(binary.LittleEndian.Uint16(be[:]))
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+20+8),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // EtherType
		asm.JNE.Imm(asm.R5, 0x0008, "pass"),       // 0x0800 read little-endian
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte), // version, IHL
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+9, asm.Byte), // protocol
		asm.JNE.Imm(asm.R5, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+20+2, asm.Half), // UDP destination port
		asm.JNE.Imm(asm.R5, portLE, "pass"),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word), // rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS when the entry is empty
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
}

// AttachRedirect creates an XSKMAP of queues entries and the program, and
// attaches it in native (driver) mode to h's veth end. With peer non-nil it
// first turns tx checksum offload off on the peer's end (see the package
// doc).
func AttachRedirect(t testing.TB, h, peer *nstest.Host, queues int, dport uint16) *Redirect {
	t.Helper()
	if peer != nil {
		if err := DisableTxOffload(peer); err != nil {
			t.Fatalf("xsktest: %v", err)
		}
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		t.Fatalf("xsktest: create XSKMAP: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xsk_redirect", Type: ebpf.XDP, License: "GPL", Instructions: Instructions(m, dport)})
	if err != nil {
		t.Fatalf("xsktest: load program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	var l link.Link
	err = h.Do(func() error {
		var err error
		l, err = link.AttachXDP(link.XDPOptions{Program: p, Interface: h.IfIndex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		t.Fatalf("xsktest: attach XDP (native) to %s in %s: %v", h.Link, h.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return &Redirect{Map: m, Prog: p, Link: l}
}

// Register puts the socket fd in the XSKMAP entry of queue.
func (r *Redirect) Register(queue, fd int) error {
	if err := r.Map.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("xsktest: register xsk fd %d for queue %d: %w", fd, queue, err)
	}
	return nil
}

// DisableTxOffload turns tx checksum offload (and with it TSO) off on h's
// veth end, so that its kernel writes complete checksums into the frames it
// sends.
func DisableTxOffload(h *nstest.Host) error {
	return h.Do(func() error {
		if err := setFeature(h.Link, ethtoolSTXCSUM, false); err != nil {
			return err
		}
		return setFeature(h.Link, ethtoolSTSO, false)
	})
}

// EnableGRO turns GRO on at h's veth end (which gives its receive queues a
// NAPI, so that the peer's XDP frames are taken) and returns what puts the
// previous setting back.
func EnableGRO(h *nstest.Host) (restore func() error, err error) {
	var was bool
	err = h.Do(func() error {
		if was, err = getFeature(h.Link, ethtoolGGRO); err != nil {
			return err
		}
		return setFeature(h.Link, ethtoolSGRO, true)
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		if was {
			return nil
		}
		return h.Do(func() error { return setFeature(h.Link, ethtoolSGRO, false) })
	}, nil
}
