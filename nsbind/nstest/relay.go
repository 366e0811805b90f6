package nstest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Impairment is what the relay of a rig built with Options.Relay does to
// the frames it carries, each way, as `tc qdisc add dev X root netem loss
// L delay D reorder R` would on a veth: a share Loss of the frames is
// dropped; of the others, a share Reorder goes at once and the rest after
// Delay, so that the ones sent at once overtake those held. (Reorder
// needs a Delay, as with netem.) At most relayLimit frames are held each
// way, netem's default limit; more are dropped and counted as Overflow.
// A frame is what the veth carries: with segmentation offload on, a
// segment of up to 64 KiB, lost or delayed whole, as netem does.
type Impairment struct {
	Loss    float64
	Delay   time.Duration
	Reorder float64
}

// RelayStats counts what the relay did, both ways together.
type RelayStats struct {
	Frames    uint64 // frames read
	Dropped   uint64 // lost on purpose (Loss)
	Reordered uint64 // sent at once, ahead of delayed frames (Reorder)
	Delayed   uint64 // held for Delay
	Overflow  uint64 // dropped: relayLimit frames were held already
	Errors    uint64 // failed writes
}

// relayLimit is how many frames each direction holds for delay.
const relayLimit = 1000

// vnetHdrLen is the size of struct virtio_net_hdr, which PACKET_VNET_HDR
// puts before each frame: the relay passes it on as it came, so that a
// segment with a partial checksum or one to be segmented stays so.
const vnetHdrLen = 10

// relay joins the middle namespace's two veth ends: every frame received
// on one is written to the other, impaired as its Impairment says.
type relay struct {
	imp     atomic.Pointer[Impairment]
	closed  atomic.Bool
	files   [2]*os.File // the packet sockets on m-a and m-b
	wg      sync.WaitGroup
	frames  atomic.Uint64
	dropped atomic.Uint64
	reorder atomic.Uint64
	delayed atomic.Uint64
	over    atomic.Uint64
	errs    atomic.Uint64
}

// heldFrame is a frame waiting for its time.
type heldFrame struct {
	due time.Time
	b   []byte
}

// startRelay opens a packet socket on each of the interfaces ifA and ifB
// inside ns and starts carrying frames between them.
func startRelay(ns netns.NsHandle, ifA, ifB int) (*relay, error) {
	r := &relay{}
	r.imp.Store(&Impairment{})
	for i, ifindex := range []int{ifA, ifB} {
		var fd int
		err := DoIn(ns, func() error {
			var err error
			fd, err = packetSocket(ifindex)
			return err
		})
		if err != nil {
			r.close()
			return nil, err
		}
		r.files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("relay-%d", ifindex))
	}
	for i := range 2 {
		in, out := r.files[i], r.files[1-i]
		q := make(chan heldFrame, relayLimit)
		r.wg.Add(2)
		go r.read(in, out, q)
		go r.hold(out, q)
	}
	return r, nil
}

// packetSocket opens a non-blocking packet socket bound to ifindex that
// receives every frame the interface receives (not the ones it sends),
// each behind a virtio-net header.
func packetSocket(ifindex int) (int, error) {
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("relay: packet socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("relay: %s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		return fail("SO_RCVBUFFORCE", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// read carries the frames of in: dropped, written to out at once, or
// queued on q for hold.
func (r *relay) read(in, out *os.File, q chan<- heldFrame) {
	defer r.wg.Done()
	defer close(q)
	buf := make([]byte, vnetHdrLen+65536+64)
	for {
		n, err := in.Read(buf)
		if err != nil {
			if r.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // the interface went down, say: do not spin
			continue
		}
		r.frames.Add(1)
		imp := r.imp.Load()
		if imp.Loss > 0 && rand.Float64() < imp.Loss {
			r.dropped.Add(1)
			continue
		}
		if imp.Delay <= 0 || (imp.Reorder > 0 && rand.Float64() < imp.Reorder) {
			if imp.Delay > 0 {
				r.reorder.Add(1)
			}
			r.write(out, buf[:n])
			continue
		}
		select {
		case q <- heldFrame{due: time.Now().Add(imp.Delay), b: append([]byte(nil), buf[:n]...)}:
			r.delayed.Add(1)
		default:
			r.over.Add(1)
		}
	}
}

// hold writes the frames of q to out when their time comes.
func (r *relay) hold(out *os.File, q <-chan heldFrame) {
	defer r.wg.Done()
	for f := range q {
		if d := time.Until(f.due); d > 0 {
			time.Sleep(d)
		}
		r.write(out, f.b)
	}
}

func (r *relay) write(out *os.File, b []byte) {
	if _, err := out.Write(b); err != nil && !r.closed.Load() {
		r.errs.Add(1)
	}
}

func (r *relay) stats() RelayStats {
	return RelayStats{
		Frames: r.frames.Load(), Dropped: r.dropped.Load(), Reordered: r.reorder.Load(),
		Delayed: r.delayed.Load(), Overflow: r.over.Load(), Errors: r.errs.Load(),
	}
}

// close stops the relay and waits for its goroutines.
func (r *relay) close() {
	r.closed.Store(true)
	for _, f := range r.files {
		if f != nil {
			f.Close()
		}
	}
	r.wg.Wait()
}

// Impair sets what the relay does to the frames from now on. It fails on
// a rig built without Options.Relay.
func (p *Pair) Impair(imp Impairment) error {
	if p.relay == nil {
		return errors.New("nstest: the rig has no relay (Options.Relay)")
	}
	if imp.Loss < 0 || imp.Loss > 1 || imp.Reorder < 0 || imp.Reorder > 1 || imp.Delay < 0 {
		return fmt.Errorf("nstest: impairment %+v: shares are between 0 and 1, the delay not negative", imp)
	}
	if imp.Reorder > 0 && imp.Delay == 0 {
		return errors.New("nstest: reordering needs a delay")
	}
	p.relay.imp.Store(&imp)
	return nil
}

// RelayStats returns what the relay did so far; zero without a relay.
func (p *Pair) RelayStats() RelayStats {
	if p.relay == nil {
		return RelayStats{}
	}
	return p.relay.stats()
}
