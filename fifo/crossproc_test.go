package fifo_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
)

// The cross-process tests run a child copy of the test binary, hand it a
// segment with a fifo per direction over a unix socketpair (SCM_RIGHTS,
// along with four eventfds: data-ready and space-ready per direction), and
// stream data both ways at once, blocking on the eventfds by the fifo's
// event protocol (SetEvent/ClearEvent for data, WantDeqNotify/DeqNotify
// for space). Each side checksums what it sent and what it received; the
// parent compares the four sums.

const childEnv = "XSESSIOND_FIFO_CHILD"

const (
	modeStream = 1
	modeDgram  = 2
)

// xpMsg is the parent's message to the child.
type xpMsg struct {
	Mode       uint32
	P2C, C2P   uint32 // fifo offsets
	Seed       uint64
	Total      uint64 // bytes (stream) or datagrams (dgram) per direction
	_, _, _, _ uint32
}

// xpResult is one side's outcome.
type xpResult struct {
	SentSum, RecvSum uint32
	Sent, Recv       uint64 // bytes, or datagrams
	RecvBytes        uint64 // datagram payload bytes
	Err              [200]byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func xpVolumes() (streamBytes, dgrams uint64) {
	if raceEnabled || testing.Short() {
		return 64 << 20, 100_000
	}
	return 1 << 30, 1_000_000
}

func TestCrossProcessStream(t *testing.T) {
	n, _ := xpVolumes()
	runCrossProcess(t, modeStream, n)
}

func TestCrossProcessDgram(t *testing.T) {
	_, n := xpVolumes()
	runCrossProcess(t, modeDgram, n)
}

func newEventFD(t *testing.T) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func runCrossProcess(t *testing.T, mode uint32, total uint64) {
	seg, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "xproc", Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p2c, err := seg.AllocFifo(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	c2p, err := seg.AllocFifo(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	efds := [4]int{newEventFD(t), newEventFD(t), newEventFD(t), newEventFD(t)}
	defer func() {
		for _, fd := range efds {
			unix.Close(fd)
		}
	}()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	childSock := os.NewFile(uintptr(sp[1]), "child-sock")
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcessChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{childSock} // fd 3 in the child
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childSock.Close()
	defer func() {
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	}()

	msg := xpMsg{Mode: mode, P2C: p2c.Offset(), C2P: c2p.Offset(), Seed: uint64(time.Now().UnixNano()), Total: total}
	var mb bytes.Buffer
	binary.Write(&mb, binary.NativeEndian, &msg)
	rights := unix.UnixRights(seg.FD(), efds[0], efds[1], efds[2], efds[3])
	if err := unix.Sendmsg(sp[0], mb.Bytes(), rights, nil, 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Parent: producer on p2c (data fd 0, space fd 1), consumer on c2p
	// (data fd 2, space fd 3).
	var abort atomic.Bool
	resc := make(chan []byte, 1)
	go func() {
		// The child's result, or nothing if it died: either way, a
		// failed child must not leave the parent waiting for data.
		rb := make([]byte, 1024)
		n, _ := unix.Read(sp[0], rb)
		if n <= 0 {
			rb, n = nil, 0
		}
		var r xpResult
		if n > 0 {
			binary.Read(bytes.NewReader(rb[:n]), binary.NativeEndian, &r)
		}
		if n == 0 || cstr(r.Err[:]) != "" {
			abort.Store(true)
		}
		resc <- rb[:n]
	}()
	mine := pump(&abort, mode, msg.Seed, total, p2c, efds[0], efds[1], c2p, efds[2], efds[3])
	if cstr(mine.Err[:]) != "" {
		unix.Shutdown(sp[0], unix.SHUT_WR) // tells the child to give up
	}
	rb := <-resc
	elapsed := time.Since(start)
	if len(rb) == 0 {
		cmd.Wait()
		t.Fatalf("no result from the child; parent: %q", cstr(mine.Err[:]))
	}
	var theirs xpResult
	binary.Read(bytes.NewReader(rb), binary.NativeEndian, &theirs)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if e := cstr(theirs.Err[:]); e != "" {
		t.Fatalf("child failed: %s", e)
	}
	if e := cstr(mine.Err[:]); e != "" {
		t.Fatalf("parent failed: %s", e)
	}
	if mine.Sent != total || theirs.Sent != total || mine.Recv != total || theirs.Recv != total {
		t.Fatalf("counts: parent sent %d received %d, child sent %d received %d, want %d",
			mine.Sent, mine.Recv, theirs.Sent, theirs.Recv, total)
	}
	if mine.SentSum != theirs.RecvSum || theirs.SentSum != mine.RecvSum {
		t.Fatalf("checksums: parent->child %08x/%08x, child->parent %08x/%08x",
			mine.SentSum, theirs.RecvSum, theirs.SentSum, mine.RecvSum)
	}
	what := "bytes"
	if mode == modeDgram {
		what = fmt.Sprintf("datagrams (%d and %d payload bytes)", mine.RecvBytes, theirs.RecvBytes)
	}
	t.Logf("%d %s each way in %v (both directions at once)", total, what, elapsed)
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// TestCrossProcessChild is the child side; it runs only when started by
// runCrossProcess.
func TestCrossProcessChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("runs only as the child of the cross-process tests")
	}
	const sock = 3
	buf := make([]byte, 1024)
	oob := make([]byte, unix.CmsgSpace(5*4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		t.Fatalf("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 5 {
		t.Fatalf("rights: %d, %v", len(fds), err)
	}
	var msg xpMsg
	binary.Read(bytes.NewReader(buf[:n]), binary.NativeEndian, &msg)
	seg, err := fifo.MapSegment(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p2c, err := seg.FifoAt(msg.P2C)
	if err != nil {
		t.Fatal(err)
	}
	c2p, err := seg.FifoAt(msg.C2P)
	if err != nil {
		t.Fatal(err)
	}
	// Child: producer on c2p (data fd 3, space fd 4), consumer on p2c
	// (data fd 1, space fd 2).
	var abort atomic.Bool
	go func() {
		// Anything readable on the socket (EOF) means the parent gave up.
		pfd := []unix.PollFd{{Fd: sock, Events: unix.POLLIN | unix.POLLRDHUP}}
		for {
			if n, err := unix.Poll(pfd, -1); n == 1 || (err != nil && err != unix.EINTR) {
				abort.Store(true)
				return
			}
		}
	}()
	res := pump(&abort, msg.Mode, msg.Seed+1, msg.Total, c2p, fds[3], fds[4], p2c, fds[1], fds[2])
	var rb bytes.Buffer
	binary.Write(&rb, binary.NativeEndian, &res)
	if _, err := unix.Write(sock, rb.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// pump produces total units into out and consumes total units from in, in
// two goroutines, and returns the sums.
// A failure on either side sets abort, which ends every wait.
func pump(abort *atomic.Bool, mode uint32, seed, total uint64, out *fifo.Fifo, outData, outSpace int, in *fifo.Fifo, inData, inSpace int) (r xpResult) {
	var wg sync.WaitGroup
	var perr, cerr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		w := waiter{abort: abort, f: out, data: outData, space: outSpace}
		if mode == modeStream {
			r.Sent, r.SentSum, perr = produceStream(w, seed, total)
		} else {
			r.Sent, r.SentSum, perr = produceDgrams(w, seed, total)
		}
		if perr != nil {
			abort.Store(true)
		}
	}()
	go func() {
		defer wg.Done()
		w := waiter{abort: abort, f: in, data: inData, space: inSpace}
		if mode == modeStream {
			r.Recv, r.RecvSum, cerr = consumeStream(w, seed, total)
		} else {
			r.Recv, r.RecvSum, r.RecvBytes, cerr = consumeDgrams(w, seed, total)
		}
		if cerr != nil {
			abort.Store(true)
		}
	}()
	wg.Wait()
	if err := errorsJoin(perr, cerr); err != nil {
		copy(r.Err[:len(r.Err)-1], err.Error())
	}
	return r
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waiter blocks one side of a fifo by the event protocol.
type waiter struct {
	abort       *atomic.Bool
	f           *fifo.Fifo
	data, space int // eventfds: data ready (producer signals), space ready (consumer signals)
}

// efdWait waits for an eventfd to be signalled and resets it, or returns
// after a while so the caller can notice an abort.
func efdWait(fd int) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 200); n == 1 {
		var b [8]byte
		unix.Read(fd, b[:])
	}
}

var errAborted = errors.New("aborted: the other side failed")

func efdSignal(fd int) {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	unix.Write(fd, b[:])
}

const spins = 200

// produced is called by the producer after queueing.
func (w waiter) produced() {
	if w.f.SetEvent() {
		efdSignal(w.data)
	}
}

// consumed is called by the consumer after removing n bytes.
func (w waiter) consumed(n int) {
	if w.f.DeqNotify(n) {
		efdSignal(w.space)
	}
}

// waitSpace blocks the producer until need bytes are free.
func (w waiter) waitSpace(need int) error {
	for i := 0; ; i++ {
		if w.f.MaxEnqueue() >= need {
			return nil
		}
		if _, _, err := w.f.Reserve(need); err == fifo.ErrCorrupt {
			return err
		}
		if w.abort.Load() {
			return errAborted
		}
		if i < spins {
			runtime.Gosched()
			continue
		}
		w.f.WantDeqNotify(fifo.DeqNotifyAlways)
		if w.f.MaxEnqueue() >= need {
			w.f.WantDeqNotify(0)
			return nil
		}
		efdWait(w.space)
		w.f.WantDeqNotify(0)
		i = 0
	}
}

// waitData blocks the consumer until something is queued.
func (w waiter) waitData() error {
	for i := 0; ; i++ {
		if w.f.MaxDequeue() > 0 {
			return nil
		}
		if w.abort.Load() {
			return errAborted
		}
		if i < spins {
			runtime.Gosched()
			continue
		}
		w.f.ClearEvent()
		if w.f.MaxDequeue() > 0 {
			return nil
		}
		efdWait(w.data)
		i = 0
	}
}

// source is a random buffer that chunks are cut from.
func source(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, 2<<20)
	for i := 0; i < len(b); i += 8 {
		binary.NativeEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func produceStream(w waiter, seed, total uint64) (uint64, uint32, error) {
	src := source(seed)
	r := rand.New(rand.NewPCG(seed, 1))
	var sent uint64
	var sum uint32
	for sent < total {
		n := 1 + r.IntN(64<<10)
		n = int(min(uint64(n), total-sent))
		off := r.IntN(len(src) - n)
		chunk := src[off : off+n]
		sum = crc32.Update(sum, castagnoli, chunk)
		zeroCopy := r.IntN(2) == 0
		for len(chunk) > 0 {
			if zeroCopy {
				a, b, err := w.f.Reserve(len(chunk))
				if err == fifo.ErrNoSpace {
					if err := w.waitSpace(1); err != nil {
						return sent, sum, err
					}
					continue
				}
				if err != nil {
					return sent, sum, err
				}
				k := copy(a, chunk)
				k += copy(b, chunk[k:])
				if err := w.f.Commit(k); err != nil {
					return sent, sum, err
				}
				chunk = chunk[k:]
			} else {
				k, err := w.f.Enqueue(chunk)
				if err == fifo.ErrNoSpace {
					if err := w.waitSpace(1); err != nil {
						return sent, sum, err
					}
					continue
				}
				if err != nil {
					return sent, sum, err
				}
				chunk = chunk[k:]
			}
			w.produced()
		}
		sent += uint64(n)
	}
	return sent, sum, nil
}

func consumeStream(w waiter, seed, total uint64) (uint64, uint32, error) {
	r := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, 64<<10)
	var got uint64
	var sum uint32
	for got < total {
		if err := w.waitData(); err != nil {
			return got, sum, err
		}
		var n int
		if r.IntN(2) == 0 {
			k, err := w.f.Dequeue(buf[:1+r.IntN(len(buf))])
			if err != nil {
				return got, sum, err
			}
			sum = crc32.Update(sum, castagnoli, buf[:k])
			n = k
		} else {
			a, b, err := w.f.PeekSlices()
			if err != nil {
				return got, sum, err
			}
			sum = crc32.Update(sum, castagnoli, a)
			sum = crc32.Update(sum, castagnoli, b)
			n = len(a) + len(b)
			if err := w.f.Release(n); err != nil {
				return got, sum, err
			}
		}
		got += uint64(n)
		w.consumed(n)
	}
	if got != total {
		return got, sum, fmt.Errorf("received %d bytes, want %d", got, total)
	}
	return got, sum, nil
}

// dgramSum folds a datagram's header fields and payload into sum.
func dgramSum(sum uint32, h *fifo.DgramHeader, a, b []byte) uint32 {
	var hb [40]byte
	binary.NativeEndian.PutUint32(hb[0:], h.Len)
	binary.NativeEndian.PutUint16(hb[4:], h.RemotePort)
	binary.NativeEndian.PutUint16(hb[6:], h.LocalPort)
	hb[8] = h.Family
	copy(hb[9:25], h.Remote[:])
	copy(hb[25:40], h.Local[:15])
	sum = crc32.Update(sum, castagnoli, hb[:])
	sum = crc32.Update(sum, castagnoli, a)
	return crc32.Update(sum, castagnoli, b)
}

const maxDgram = 2000

func produceDgrams(w waiter, seed, total uint64) (uint64, uint32, error) {
	src := source(seed)
	r := rand.New(rand.NewPCG(seed, 3))
	hs := make([]fifo.DgramHeader, 32)
	ps := make([][]byte, 32)
	var sent uint64
	var sum uint32
	for sent < total {
		k := 1
		if r.IntN(2) == 0 {
			k = 1 + r.IntN(32)
		}
		k = int(min(uint64(k), total-sent))
		need := 0
		for i := range k {
			n := r.IntN(maxDgram + 1)
			off := r.IntN(len(src) - n)
			ps[i] = src[off : off+n]
			hs[i] = fifo.DgramHeader{Len: uint32(n), Family: 4 + 2*uint8(r.IntN(2)), RemotePort: uint16(r.Uint32()), LocalPort: uint16(r.Uint32())}
			binary.NativeEndian.PutUint64(hs[i].Remote[:], r.Uint64())
			binary.NativeEndian.PutUint64(hs[i].Local[8:], r.Uint64())
			sum = dgramSum(sum, &hs[i], ps[i], nil)
			need += fifo.DgramRecordSize(n)
		}
		if err := w.waitSpace(need); err != nil {
			return sent, sum, err
		}
		if k == 1 {
			if err := w.f.EnqueueDgram(&hs[0], ps[0]); err != nil {
				return sent, sum, err
			}
		} else if n, err := w.f.EnqueueDgrams(hs[:k], ps[:k]); n != k || err != nil {
			return sent, sum, fmt.Errorf("EnqueueDgrams = %d of %d: %v", n, k, err)
		}
		sent += uint64(k)
		w.produced()
	}
	return sent, sum, nil
}

func consumeDgrams(w waiter, seed, total uint64) (uint64, uint32, uint64, error) {
	r := rand.New(rand.NewPCG(seed, 4))
	hs := make([]fifo.DgramHeader, 32)
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = make([]byte, maxDgram)
	}
	var got, bytes uint64
	var sum uint32
	for got < total {
		if err := w.waitData(); err != nil {
			return got, sum, bytes, err
		}
		var removed int
		switch r.IntN(3) {
		case 0:
			n, err := w.f.DequeueDgrams(hs[:1+r.IntN(32)], bufs)
			if err != nil {
				return got, sum, bytes, err
			}
			for i := range n {
				sum = dgramSum(sum, &hs[i], bufs[i][:hs[i].Len], nil)
				bytes += uint64(hs[i].Len)
				removed += fifo.DgramRecordSize(int(hs[i].Len))
			}
			got += uint64(n)
		case 1:
			n, err := w.f.DequeueDgram(&hs[0], bufs[0])
			if err != nil {
				return got, sum, bytes, err
			}
			sum = dgramSum(sum, &hs[0], bufs[0][:n], nil)
			bytes += uint64(n)
			removed = fifo.DgramRecordSize(n)
			got++
		default:
			a, b, err := w.f.PeekDgram(&hs[0])
			if err != nil {
				return got, sum, bytes, err
			}
			sum = dgramSum(sum, &hs[0], a, b)
			n, err := w.f.DropDgram()
			if err != nil || n != int(hs[0].Len) {
				return got, sum, bytes, fmt.Errorf("DropDgram = %d, %v after a peek of %d", n, err, hs[0].Len)
			}
			bytes += uint64(n)
			removed = fifo.DgramRecordSize(n)
			got++
		}
		w.consumed(removed)
	}
	return got, sum, bytes, nil
}
