package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// The TCP path's way out (unless TCPConfig.NoGSO): a packet socket on the
// interface that takes each packet behind a virtio-net header
// (PACKET_VNET_HDR), as a hypervisor's tap does. The Stack then runs with
// tcp.Options.HostGSO: its sender hands out segments of up to 64 KiB with
// the TCP checksum left partial, and the kernel finishes them as it does
// its own TCP's: handed whole to a link that segments (a veth passes it
// on as one packet, a NIC with TSO cuts it in hardware), cut in software
// (GSO) before any other, the checksum filled in where the link does not.
//
// Why not the AF_XDP tx ring: a frame there is one packet of at most the
// MTU, so bulk sending costs a frame, a copy into the UMEM and, in copy
// mode, an skb and a pass through the driver per 1,448 bytes; AF_XDP has
// no segmentation offload. A kernel TCP socket sending on the same link
// hands it 64 KiB at a time. Measured with the perf harness's bulk send
// (perf --tcp), see docs/perf.
//
// The socket receives nothing (protocol 0). Packets keep the order the
// worker drains them in: one connection's packets are queued on one
// worker (tcpPath.write), and each write (a writev, or a sendmmsg of
// several in queue order) hands them to the link before it returns.

// gsoTx is the packet socket the workers write TCP packets to.
type gsoTx struct{ fd int }

// gsoSndBuf is the packet socket's send buffer: room for a window of
// 64 KiB packets on their way through the qdisc.
const gsoSndBuf = 4 << 20

// openGSOTx opens the packet socket on interface ifindex of namespace
// nsh.
func openGSOTx(nsh netns.NsHandle, ifindex int) (*gsoTx, error) {
	fd := -1
	err := doIn(nsh, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifindex}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, gsoSndBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, gsoSndBuf)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("tcp packet socket: %w", err)
	}
	return &gsoTx{fd: fd}, nil
}

func (g *gsoTx) close() error { return unix.Close(g.fd) }

// gsoResult is what a write to the packet socket came to.
type gsoResult int

const (
	gsoSent   gsoResult = iota // the kernel took the packet
	gsoAgain                   // the socket's buffer is full: write it again later
	gsoFailed                  // the kernel refused or dropped it
)

// gsoHdr is what goes in front of a packet on the packet socket: its
// virtio-net header, then its Ethernet header.
type gsoHdr [tcp.VirtioNetHdrLen + frame.EthHeaderLen]byte

// frame fills h for pkt, sent from src to mac.
func (h *gsoHdr) frame(pkt tcp.Packet, src, mac [6]byte) {
	var vh [tcp.VirtioNetHdrLen]byte
	pkt.VirtioNetHdr(&vh, frame.EthHeaderLen)
	copy(h[:], vh[:])
	eth := h[tcp.VirtioNetHdrLen:]
	copy(eth[0:6], mac[:])
	copy(eth[6:12], src[:])
	binary.BigEndian.PutUint16(eth[12:14], pkt.EtherType())
}

// gsoScratch is a worker's reusable state for writes to the packet
// socket.
type gsoScratch struct {
	hdr    gsoHdr
	slices [][]byte
	iov    []unix.Iovec
}

// send writes pkt to the packet socket behind its virtio-net header and
// an Ethernet header to mac, and gives what it wrote (from the Ethernet
// header on) to capture, if not nil, on queue q. It allocates nothing
// once the scratch has grown to the packets' number of slices.
func (g *gsoTx) send(s *gsoScratch, pkt tcp.Packet, src, mac [6]byte, capture *Capture, q int) (gsoResult, error) {
	s.hdr.frame(pkt, src, mac)
	eth := s.hdr[tcp.VirtioNetHdrLen:]
	s.slices = append(s.slices[:0], s.hdr[:])
	s.slices = pkt.AppendSlices(s.slices)
	err := writev(g.fd, s.slices, &s.iov)
	if err == nil && capture != nil {
		s.slices[0] = eth
		capture.txParts(q, s.slices, frame.EthHeaderLen+pkt.Len())
	}
	clear(s.slices) // drop the references to the Stack's buffers
	switch {
	case err == nil:
		return gsoSent, nil
	case errors.Is(err, unix.EAGAIN):
		return gsoAgain, nil
	default:
		return gsoFailed, err
	}
}

// gsoBatchMax is the most packets one sendmmsg(2) of a worker's drain
// writes: the worker's queue holds the replies of every connection its
// loop moved, and each system call costs about a microsecond on a VM.
const gsoBatchMax = 16

// gsoBatch is a worker's reusable state for writing queued packets to the
// packet socket in one sendmmsg(2).
type gsoBatch struct {
	hdrs  [gsoBatchMax]gsoHdr
	parts [gsoBatchMax][][]byte // each packet's slices, its headers first
	keys  [gsoBatchMax]nbKey    // each packet's next hop
	macs  [gsoBatchMax][6]byte
	lens  [gsoBatchMax]int // each packet's length from the Ethernet header on
	iov   []unix.Iovec     // every packet's iovecs, one after another
	msgs  [gsoBatchMax]unix.Mmsghdr
	n     int
}

// add frames pkt behind its virtio-net header and an Ethernet header from
// src to mac, bound for next hop k. The batch must not be full.
func (b *gsoBatch) add(pkt tcp.Packet, src, mac [6]byte, k nbKey) {
	i := b.n
	h := &b.hdrs[i]
	h.frame(pkt, src, mac)
	b.parts[i] = pkt.AppendSlices(append(b.parts[i][:0], h[:]))
	b.keys[i], b.macs[i], b.lens[i] = k, mac, frame.EthHeaderLen+pkt.Len()
	b.n++
}

// sent gives packet i's frame, from the Ethernet header on, to capture
// on queue q.
func (b *gsoBatch) sent(i int, capture *Capture, q int) {
	if capture == nil {
		return
	}
	b.parts[i][0] = b.hdrs[i][tcp.VirtioNetHdrLen:]
	capture.txParts(q, b.parts[i], b.lens[i])
}

// reset empties the batch and drops its references to the Stack's
// buffers.
func (b *gsoBatch) reset() {
	for i := range b.n {
		clear(b.parts[i])
		b.parts[i] = b.parts[i][:0]
	}
	b.n = 0
}

// sendBatch writes the batch's packets in one sendmmsg(2) and returns how
// many the kernel took, in order, and, when it took none, why:
// gsoAgain for a full socket buffer, gsoFailed with the error otherwise.
// A batch the kernel took in part is not an error: the caller writes the
// rest again, and learns then why the first of them was refused.
func (g *gsoTx) sendBatch(b *gsoBatch) (int, gsoResult, error) {
	n, err := sendmmsg(g.fd, b)
	switch {
	case n > 0:
		return n, gsoSent, nil
	case errors.Is(err, unix.EAGAIN):
		return 0, gsoAgain, nil
	default:
		return 0, gsoFailed, err
	}
}
