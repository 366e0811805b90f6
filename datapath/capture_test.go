package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
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
