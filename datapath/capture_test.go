package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
)

// TestCapture checks what the capture ring holds after a batch: every
// frame received, delivered or dropped, with its reason and listener, and
// that a full ring counts the rest as lost without blocking the worker.
func TestCapture(t *testing.T) {
	r := newMemRig(t, 1<<20)
	h, rx := r.listen(t, "udp://0.0.0.0:9000")
	good := udpFrames(t, 8, tRemote4, tLocal4, 9000, 100)
	other := udpFrames(t, 2, tRemote4, tLocal4, 9001, 100) // no listener
	bad := append([]byte(nil), good[0][:20]...)            // cut in the IP header
	batch := append(append(append([][]byte{}, good...), other...), bad)

	c, err := r.e.StartCapture(CaptureFilter{Slots: 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.StartCapture(CaptureFilter{}); !errors.Is(err, ErrCaptureBusy) {
		t.Fatalf("second capture: %v, want ErrCaptureBusy", err)
	}
	r.w.cap = r.e.captureFor(0)
	r.w.processBatch(batch)
	_ = rx.Drop(rx.MaxDequeue())
	var got []CaptureRecord
	c.Read(func(rec *CaptureRecord) bool {
		x := *rec
		x.Data = append([]byte(nil), rec.Data...)
		got = append(got, x)
		return true
	})
	if len(got) != len(batch) {
		t.Fatalf("captured %d frames, want %d", len(got), len(batch))
	}
	for i, rec := range got {
		if !bytes.Equal(rec.Data, batch[i]) || rec.Len != len(batch[i]) || rec.Dir != CaptureRx || rec.Queue != 0 {
			t.Errorf("frame %d: %+v", i, rec)
		}
		want := ""
		switch {
		case i >= len(good)+len(other):
			want = "truncated_ip"
		case i >= len(good):
			want = "no_session"
		}
		if rec.Reason != want {
			t.Errorf("frame %d: reason %q, want %q", i, rec.Reason, want)
		}
		if want == "" && rec.Handle != h {
			t.Errorf("frame %d: handle %#x, want the listener's %#x", i, rec.Handle, h)
		}
	}

	// A full ring: the worker goes on, the rest is counted.
	for range 3 {
		r.w.processBatch(good)
		_ = rx.Drop(rx.MaxDequeue())
	}
	if n, lost := c.Read(func(*CaptureRecord) bool { return true }), c.Lost(); n != 16 || lost != 3*8-16 {
		t.Errorf("after 24 frames into 16 slots: read %d, lost %d", n, lost)
	}
	if r.w.c.Delivered != 4*8 {
		t.Errorf("delivered %d, want %d", r.w.c.Delivered, 4*8)
	}

	// Filters: drops of one reason, frames of one listener.
	r.e.StopCapture(c)
	for _, f := range []struct {
		f    CaptureFilter
		want int
	}{
		{CaptureFilter{Reason: "no_session"}, 2},
		{CaptureFilter{Reason: "any"}, 3},
		{CaptureFilter{Handle: h}, 8},
		{CaptureFilter{Handle: h + 1}, 0},
		{CaptureFilter{App: uint32(r.app)}, 8},
	} {
		c, err := r.e.StartCapture(f.f)
		if err != nil {
			t.Fatal(err)
		}
		r.w.cap = r.e.captureFor(0)
		r.w.processBatch(batch)
		_ = rx.Drop(rx.MaxDequeue())
		if n := c.Read(func(*CaptureRecord) bool { return true }); n != f.want {
			t.Errorf("filter %+v: %d frames, want %d", f.f, n, f.want)
		}
		r.e.StopCapture(c)
	}

	// Capturing allocates nothing on the worker's path.
	c, err = r.e.StartCapture(CaptureFilter{Slots: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer r.e.StopCapture(c)
	r.w.cap = r.e.captureFor(0)
	if n := testing.AllocsPerRun(50, func() {
		r.w.processBatch(good)
		_ = rx.Drop(rx.MaxDequeue())
		c.Read(func(*CaptureRecord) bool { return true })
	}); n != 0 {
		t.Errorf("%v allocations per batch while capturing", n)
	}
}

// BenchmarkWorkerUDPCapture is BenchmarkWorkerUDP with every frame
// captured (and the ring drained each batch).
func BenchmarkWorkerUDPCapture(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			r := newMemRig(b, 1<<20)
			_, rx := r.listen(b, "udp://0.0.0.0:9000")
			frames := udpFrames(b, DefaultBatch, tRemote4, tLocal4, 9000, size)
			c, err := r.e.StartCapture(CaptureFilter{})
			if err != nil {
				b.Fatal(err)
			}
			r.w.cap = r.e.captureFor(0)
			b.ReportAllocs()
			b.SetBytes(int64(size * len(frames)))
			b.ResetTimer()
			for b.Loop() {
				r.w.processBatch(frames)
				_ = rx.Drop(rx.MaxDequeue())
				c.Read(func(*CaptureRecord) bool { return true })
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/packet")
		})
	}
}

// TestCaptureFifoFull fills a listener's rx fifo and captures with the
// fifo_full filter: every frame the fifo refused is captured, once, with
// that reason and the listener it was for, and none that was delivered;
// an unfiltered capture sees every frame in the order received, the
// refused ones with their reason. A datagram that can never fit the fifo
// is captured as too_big.
func TestCaptureFifoFull(t *testing.T) {
	r := newMemRig(t, 4096)
	h, rx := r.listen(t, "udp://0.0.0.0:9000")
	// 352-byte records: 11 fit the 4,096-byte fifo.
	good := udpFrames(t, 8, tRemote4, tLocal4, 9000, 300)
	const fit = 4096 / (fifo.DgramHeaderSize + 304)

	c, err := r.e.StartCapture(CaptureFilter{Reason: "fifo_full", Slots: 64})
	if err != nil {
		t.Fatal(err)
	}
	r.w.cap = r.e.captureFor(0)
	var sent [][]byte
	for range 3 {
		r.w.processBatch(good)
		sent = append(sent, good...)
	}
	var got []CaptureRecord
	read := func(c *Capture) {
		got = got[:0]
		c.Read(func(rec *CaptureRecord) bool {
			x := *rec
			x.Data = append([]byte(nil), rec.Data...)
			got = append(got, x)
			return true
		})
	}
	read(c)
	drops := r.w.c.Drops[dropFifoFull]
	if drops != uint64(len(sent)-fit) || r.w.c.Delivered != fit {
		t.Fatalf("%d frames into a fifo that holds %d: delivered %d, fifo_full %d", len(sent), fit, r.w.c.Delivered, drops)
	}
	if uint64(len(got)) != drops {
		t.Fatalf("captured %d frames with reason fifo_full, want the %d dropped", len(got), drops)
	}
	for i, rec := range got {
		want := sent[fit+i]
		if rec.Reason != "fifo_full" || rec.Handle != h || rec.App != uint32(r.app) || rec.Dir != CaptureRx || !bytes.Equal(rec.Data, want) {
			t.Errorf("capture %d: reason %q handle %#x app %d dir %d, %d bytes (frame %d: %d bytes)", i, rec.Reason, rec.Handle, rec.App,
				rec.Dir, len(rec.Data), fit+i, len(want))
		}
	}
	r.e.StopCapture(c)

	// Unfiltered, with frames for no listener among them: the order
	// received, each with what became of it.
	_ = rx.Drop(rx.MaxDequeue())
	other := udpFrames(t, 2, tRemote4, tLocal4, 9001, 100)
	batch := [][]byte{good[0], good[1], good[2], good[3], other[0], good[4], good[5], good[6], good[7], other[1]}
	c, err = r.e.StartCapture(CaptureFilter{Slots: 64})
	if err != nil {
		t.Fatal(err)
	}
	r.w.cap = r.e.captureFor(0)
	r.w.processBatch(batch)
	r.w.processBatch(batch)
	read(c)
	r.e.StopCapture(c)
	if len(got) != 2*len(batch) {
		t.Fatalf("captured %d frames, want %d", len(got), 2*len(batch))
	}
	queued := 0
	for i, rec := range got {
		f := batch[i%len(batch)]
		want := ""
		switch {
		case &f[0] == &other[0][0] || &f[0] == &other[1][0]:
			want = "no_session"
		case queued < fit:
			queued++
		default:
			want = "fifo_full"
		}
		if rec.Reason != want || !bytes.Equal(rec.Data, f) {
			t.Errorf("frame %d: reason %q (%d bytes), want %q (%d bytes)", i, rec.Reason, len(rec.Data), want, len(f))
		}
	}

	// Capturing the refused frames allocates nothing on the worker's path.
	c, err = r.e.StartCapture(CaptureFilter{Reason: "fifo_full", Slots: 64})
	if err != nil {
		t.Fatal(err)
	}
	r.w.cap = r.e.captureFor(0)
	before := r.w.c.Drops[dropFifoFull]
	if n := testing.AllocsPerRun(50, func() {
		r.w.processBatch(good)
		c.Read(func(*CaptureRecord) bool { return true })
	}); n != 0 {
		t.Errorf("%v allocations per batch capturing fifo_full drops", n)
	}
	if r.w.c.Drops[dropFifoFull] == before {
		t.Error("the fifo was full, but no frame was dropped as fifo_full")
	}
	r.e.StopCapture(c)

	// A datagram larger than the whole fifo.
	_ = rx.Drop(rx.MaxDequeue())
	big := udpFrames(t, 1, tRemote4, tLocal4, 9000, 1400)
	rs := newMemRig(t, 1024)
	hs, _ := rs.listen(t, "udp://0.0.0.0:9000")
	c, err = rs.e.StartCapture(CaptureFilter{Reason: "too_big"})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.e.StopCapture(c)
	rs.w.cap = rs.e.captureFor(0)
	rs.w.processBatch(big)
	read(c)
	if len(got) != 1 || got[0].Reason != "too_big" || got[0].Handle != hs || !bytes.Equal(got[0].Data, big[0]) {
		t.Fatalf("a 1,400-byte datagram for a 1,024-byte fifo: captured %+v", got)
	}
}
