package datapath

import "github.com/xsessiond/xsessiond/datapath/xsk"

// Multi-buffer packets. A socket bound with XDP_USE_SG (xsk.Options.
// MultiBuffer) receives a packet larger than a UMEM frame as a chain of
// descriptors, each but the last with xsk.DescContinued set. The kernel
// publishes a packet's descriptors together, so a batch that ends inside a
// chain takes the rest of it from the ring at once (worker.receive). In
// generic XDP mode on a veth such packets are the TCP segments of up to
// 64 KiB its peer's segmentation offload builds (native mode turns that
// offload off), or longer where the peer's GSO size allows (BIG TCP, whose
// IP length field says 0: the XDP program, the decoder and the TCP link
// take the frame's length for the packet's); in native mode on a link
// whose MTU is larger than a frame, any packet that long.
//
// The worker joins each chain into one frame in an arena of its own and
// hands the batch's frames on as usual: TCP takes a joined segment whole
// (gVisor accepts a segment of any length within its window). The XDP
// program gives a multi-buffer UDP frame to the kernel (udp_multi_buffer):
// it may be a segmentation offload burst, several datagrams under one UDP
// header whose boundaries the frame no longer shows, which the kernel cuts
// and delivers to the port's reservation (kernelpath.go). A UDP fragment
// longer than a frame (behind a link whose MTU is) goes to the reassembly
// like any other fragment. A joined frame that is neither, which the
// program does not steer, is dropped and counted (dropChainNotTCP).

// maxChainDescs bounds the descriptors of one chain: a BIG TCP segment of
// up to 512 KiB (Linux's largest GSO size) and its headers in 2 KiB frames
// take 257.
const maxChainDescs = 257

// chainJoiner makes one frame of each packet of a batch of descriptors.
type chainJoiner struct {
	arena    []byte // the batch's joined frames, reused by the next batch
	skipping bool   // the rest of a chain cut off at the end of a batch is dropped
}

// newChainJoiner returns a joiner for batches of at most descs descriptors
// of at most frameSize bytes each: whatever they hold fits its arena.
func newChainJoiner(descs, frameSize int) *chainJoiner {
	return &chainJoiner{arena: make([]byte, descs*frameSize)}
}

// join puts in frames the frame of each packet of descs, in order, and
// returns how many, and how many of them it joined from chains;
// chained[i] reports whether frame i was. A chain still open at the end
// of descs is dropped, and so are the rest of its descriptors when they
// come (skipping, up to the one without DescContinued); broken counts
// those chains, and chains that do not fit the arena (which descriptors
// of at most a frame each cannot make). frameOf returns a descriptor's
// bytes. Joined frames stay valid until the next call.
func (j *chainJoiner) join(descs []xsk.Desc, frameOf func(xsk.Desc) []byte, frames [][]byte, chained []bool) (n, joined, broken int) {
	used := 0
	start := -1 // the open chain's first descriptor
	for i, d := range descs {
		more := d.Options&xsk.DescContinued != 0
		if j.skipping {
			j.skipping = more
			continue
		}
		if start < 0 {
			if !more {
				frames[n], chained[n] = frameOf(d), false
				n++
				continue
			}
			start = i
		}
		if more {
			continue
		}
		size := 0
		for _, p := range descs[start : i+1] {
			size += int(p.Len)
		}
		if used+size > len(j.arena) {
			broken++
			start = -1
			continue
		}
		buf := j.arena[used : used+size : used+size]
		off := 0
		for _, p := range descs[start : i+1] {
			off += copy(buf[off:], frameOf(p))
		}
		used += size
		frames[n], chained[n] = buf[:off], true
		n++
		joined++
		start = -1
	}
	if start >= 0 {
		broken++
		j.skipping = true
	}
	return n, joined, broken
}
