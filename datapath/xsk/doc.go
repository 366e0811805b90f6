// Package xsk implements AF_XDP sockets on golang.org/x/sys/unix: UMEM
// registration, the fill, completion, rx and tx rings, and batch
// producer/consumer operations on them.
//
// A Socket owns one UMEM (NumFrames frames of FrameSize bytes, mmapped
// anonymously), the four rings mmapped from the kernel, and one file
// descriptor bound to (ifindex, queue). One socket per queue; the UMEM is not
// shared between sockets.
//
// # Rings
//
// Each ring is a single-producer, single-consumer queue shared with the
// kernel. The producer owns the producer index and the descriptor slots it
// has reserved; the consumer owns the consumer index. An index is published
// with an atomic store (release) after the slots are written or read, and
// the other side's index is read with an atomic load (acquire) only when the
// cached copy says there is no room or nothing to read. The application
// produces on the fill and tx rings and consumes from the rx and completion
// rings.
//
// # Frames
//
// Every frame is in exactly one place at a time, and the Socket keeps a
// state per frame to enforce it:
//
//   - free: on the Socket's free list;
//   - fill: given to the kernel for receiving (fill ring, kernel, rx ring);
//   - app: owned by the caller, after Receive or AllocFrames;
//   - tx: given to the kernel for sending (tx ring, kernel, completion ring).
//
// Fill moves free frames to the fill ring; Receive hands frames to the
// caller; Free returns them to the free list; Transmit gives them to the
// kernel; Complete takes them back from the completion ring to the free list.
// A descriptor or address that does not name a frame in the expected state
// (out of range, double free, a frame the kernel never had) is not acted on
// and is counted in Stats.BadDescs. Accounting and Check report and verify
// the invariant free + fill + app + tx == NumFrames.
//
// # Wakeups
//
// With Options.NeedWakeup the socket is bound with XDP_USE_NEED_WAKEUP: the
// kernel is kicked with sendto only when the tx ring's need_wakeup flag is
// set, and woken with recvfrom when the fill ring's flag is set and nothing
// was received. Without it, every Transmit kicks. In copy mode (veth and
// drivers without AF_XDP zero-copy support) the kernel sends only when
// kicked and a bounded number of frames per kick, so Complete kicks again
// while frames are waiting in the tx ring.
//
// # Multi-buffer
//
// With Options.MultiBuffer the socket is bound with XDP_USE_SG (Linux 6.6
// and later; where the bind refuses it, the socket is bound without it and
// MultiBuffer reports false). A packet larger than a frame then arrives as
// several descriptors, each but the last with DescContinued in Options;
// the kernel publishes them together. Each is a frame of its own to
// Receive, Frame and Free. Without it the kernel drops such a packet
// (Stats.RxDropped).
//
// # Concurrency
//
// A Socket belongs to one goroutine: Fill, Receive, Frame, Buffer, Free,
// AllocFrames, Transmit, Complete, Kick, Poll, Accounting and Check must not
// be called concurrently. Stats may be called from any goroutine while the
// owner runs, but not concurrently with Close. Close releases the fd and all
// mappings; slices returned by Frame and Buffer must not be used afterwards.
package xsk
