package daemon

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

// TestCaptureStream writes a capture stream as the daemon does and checks
// the pcapng CaptureToPcapng makes of it, and that cut or damaged streams
// are reported, never mistaken for whole ones.
func TestCaptureStream(t *testing.T) {
	var buf bytes.Buffer
	sw := newStreamWriter(&buf)
	// ends are where the writer's records end in the stream: the
	// header's, each frame's, the end record's.
	var ends []int
	mark := func() {
		t.Helper()
		if err := sw.flush(); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, buf.Len())
	}
	if err := sw.header(streamHeader{Snaplen: 1536, Iface: "veth0", Version: "dev", Queues: []int{0, 3}}); err != nil {
		t.Fatal(err)
	}
	mark()
	now := time.Unix(1700000000, 123456789)
	recs := []datapath.CaptureRecord{
		{Queue: 0, Dir: datapath.CaptureRx, Time: now, Handle: 0x8000000004112328, App: 1, Len: 60, Data: bytes.Repeat([]byte{1}, 60)},
		{Queue: 3, Dir: datapath.CaptureTx, Time: now, Handle: flow.MakeHandle(1, 2), App: 2, Len: 1600, Data: bytes.Repeat([]byte{2}, 1536)},
		{Queue: 3, Dir: datapath.CaptureRx, Time: now, Reason: "no_session", Len: 42, Data: bytes.Repeat([]byte{3}, 42)},
		{Queue: 0, Dir: datapath.CaptureRx, Time: now, Handle: 0x8000000004112328, App: 1, Reason: "fifo_full", Len: 60, Data: bytes.Repeat([]byte{4}, 60)},
	}
	for i := range recs {
		if err := sw.frame(&recs[i]); err != nil {
			t.Fatal(err)
		}
		mark()
	}
	if err := sw.end([]uint64{5, 7}); err != nil {
		t.Fatal(err)
	}
	mark()
	stream := buf.Bytes()
	if len(ends) != len(recs)+2 || ends[len(ends)-1] != len(stream) {
		t.Fatalf("record ends %v in a stream of %d bytes", ends, len(stream))
	}

	var out bytes.Buffer
	res, err := CaptureToPcapng(bytes.NewReader(stream), &out)
	if err != nil || res.Frames != 4 || res.Lost != 12 || !res.Ended {
		t.Fatalf("CaptureToPcapng: %+v %v", res, err)
	}
	var dropped []uint64
	r, err := pcapgo.NewNgReader(&out, pcapgo.NgReaderOptions{
		StatisticsCallback: func(_ int, s pcapgo.NgInterfaceStatistics) { dropped = append(dropped, s.PacketsDropped) },
	})
	if err != nil {
		t.Fatal(err)
	}
	wantIf := []int{0, 3, 2, 0}
	wantComment := []string{"q0 rx handle 0x8000000004112328 app 1", "q3 tx handle " + Handle(flow.MakeHandle(1, 2)).String() + " app 2", "q3 rx drop no_session",
		"q0 rx handle 0x8000000004112328 app 1 drop fifo_full"}
	for i, rec := range recs {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(data, rec.Data) || ci.Length != rec.Len || ci.InterfaceIndex != wantIf[i] || !ci.Timestamp.Equal(now) {
			t.Errorf("frame %d: %d bytes of %d, interface %d, at %v", i, len(data), ci.Length, ci.InterfaceIndex, ci.Timestamp)
		}
		if len(opts.Comments) != 1 || opts.Comments[0] != wantComment[i] {
			t.Errorf("frame %d: comments %q, want %q", i, opts.Comments, wantComment[i])
		}
		wantDir := pcapgo.NgEpbFlagDirectionInbound
		if rec.Dir == datapath.CaptureTx {
			wantDir = pcapgo.NgEpbFlagDirectionOutbound
		}
		if opts.Flags == nil || opts.Flags.Direction != wantDir {
			t.Errorf("frame %d: flags %+v", i, opts.Flags)
		}
	}
	if _, _, err := r.ReadPacketData(); !errors.Is(err, io.EOF) {
		t.Errorf("after the frames: %v", err)
	}
	if len(dropped) != 2 || dropped[0] != 5 || dropped[1] != 7 {
		t.Errorf("interface statistics: dropped %v, want [5 7]", dropped)
	}
	if n, _ := r.Interface(2); n.Name != "veth0:q3:rx" {
		t.Errorf("interface 2 is %q", n.Name)
	}

	// Cut anywhere short of the whole: never Ended. Cut after a whole
	// record: the frames before it, no error. Cut inside a record (the
	// header, a frame, the end record) or before any: an error (past the
	// magic, ErrBadStream), with the frames before that record.
	for cut := 0; cut < len(stream); cut++ {
		res, err := CaptureToPcapng(bytes.NewReader(stream[:cut]), io.Discard)
		if res.Ended {
			t.Fatalf("cut at %d of %d: ended", cut, len(stream))
		}
		// Records that end at or before the cut, and whether one does
		// at the cut.
		whole, between := 0, false
		for _, e := range ends {
			if e <= cut {
				whole++
				between = e == cut
			}
		}
		wantFrames := max(whole-1, 0) // the header is no frame
		switch {
		case res.Frames != wantFrames:
			t.Errorf("cut at %d of %d: %d frames, want %d (%v)", cut, len(stream), res.Frames, wantFrames, err)
		case between && err != nil:
			t.Errorf("cut at %d of %d, after a whole record: %v", cut, len(stream), err)
		case !between && err == nil:
			t.Errorf("cut at %d of %d, inside a record: no error", cut, len(stream))
		case !between && cut >= len(streamMagic) && !errors.Is(err, ErrBadStream):
			t.Errorf("cut at %d of %d, inside a record: %v, want ErrBadStream", cut, len(stream), err)
		}
	}
	bad := append([]byte(nil), stream...)
	bad[len(bad)-17] = 9 // the end record's kind
	if _, err := CaptureToPcapng(bytes.NewReader(bad), io.Discard); !errors.Is(err, ErrBadStream) {
		t.Errorf("bad record kind: %v, want ErrBadStream", err)
	}
}

// TestCapturePcapngWhileOpen: frames converted while the stream is still
// open reach the output within captureFlushEvery, without waiting for
// more frames or the stream's end (a `-w - | tcpdump -r -` reader sees
// them as they come), and many frames at once take few writes.
func TestCapturePcapngWhileOpen(t *testing.T) {
	pr, pw := io.Pipe()
	out := &countingWriter{}
	done := make(chan error, 1)
	go func() {
		_, err := CaptureToPcapng(pr, out)
		done <- err
	}()
	sw := newStreamWriter(pw)
	if err := sw.header(streamHeader{Snaplen: 1536, Iface: "veth0", Version: "dev", Queues: []int{0}}); err != nil {
		t.Fatal(err)
	}
	rec := datapath.CaptureRecord{Queue: 0, Dir: datapath.CaptureRx, Time: time.Now(), Handle: 1, App: 1, Len: 60, Data: bytes.Repeat([]byte{1}, 60)}
	const n = 1000
	for range n {
		if err := sw.frame(&rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.flush(); err != nil {
		t.Fatal(err)
	}
	// The stream stays open: the frames must show up anyway.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := pcapgo.NewNgReader(bytes.NewReader(out.bytes()), pcapgo.NgReaderOptions{})
		got := 0
		for err == nil {
			if _, _, err = r.ReadPacketData(); err == nil {
				got++
			}
		}
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames written while the stream is open", got, n)
		}
		time.Sleep(captureFlushEvery / 2)
	}
	if w := out.writes(); w > n/10 {
		t.Errorf("%d writes for %d frames", w, n)
	}
	if err := sw.end([]uint64{0}); err != nil {
		t.Fatal(err)
	}
	if err := sw.flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// countingWriter is a bytes.Buffer safe for a reader beside its writer
// that counts its writes.
type countingWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.buf.Write(p)
}

func (c *countingWriter) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func (c *countingWriter) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// BenchmarkCaptureToPcapng is the conversion's cost per frame (ctl
// capture's share of a capture), for echo-sized frames, beside a plain
// copy of the same stream through the same buffer sizes into memory.
func BenchmarkCaptureToPcapng(b *testing.B) {
	var buf bytes.Buffer
	sw := newStreamWriter(&buf)
	if err := sw.header(streamHeader{Snaplen: 1536, Iface: "veth0", Version: "dev", Queues: []int{0}}); err != nil {
		b.Fatal(err)
	}
	const n = 10000
	now := time.Now()
	for i := range n {
		rec := datapath.CaptureRecord{Queue: 0, Dir: i & 1, Time: now.Add(time.Duration(i)), Handle: 0x8000000004112328, App: 1, Len: 106, Data: bytes.Repeat([]byte{1}, 106)}
		if err := sw.frame(&rec); err != nil {
			b.Fatal(err)
		}
	}
	if err := sw.end([]uint64{0}); err != nil {
		b.Fatal(err)
	}
	if err := sw.flush(); err != nil {
		b.Fatal(err)
	}
	stream := buf.Bytes()
	b.Run("pcapng", func(b *testing.B) {
		for b.Loop() {
			if _, err := CaptureToPcapng(bytes.NewReader(stream), io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
	})
	b.Run("copy", func(b *testing.B) {
		buf := make([]byte, 256<<10)
		var sink copySink
		for b.Loop() {
			if _, err := io.CopyBuffer(&sink, struct{ io.Reader }{bytes.NewReader(stream)}, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
	})
}

// copySink copies what it is written into a buffer it reuses.
type copySink struct{ buf [256 << 10]byte }

func (c *copySink) Write(p []byte) (int, error) {
	for n := 0; n < len(p); {
		n += copy(c.buf[:], p[n:])
	}
	return len(p), nil
}
