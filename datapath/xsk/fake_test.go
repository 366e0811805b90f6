package xsk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeKernel plays the kernel's side of a Socket whose rings and UMEM live
// in ordinary memory, so the ring and frame logic can be tested without
// privileges.
type fakeKernel struct {
	s        *Socket
	headroom uint64
}

const fakeStart = 0xffffff00 // ring indices start near the wrap of uint32

func newFake(t testing.TB, o Options) (*Socket, *fakeKernel) {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{fd: -1, opts: o, numFrames: uint32(o.NumFrames)}
	off := unix.XDPMmapOffsets{}
	for i := range s.ringMem {
		r := unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}
		switch i {
		case ringFill:
			off.Fr = r
		case ringComp:
			off.Cr = r
		case ringRx:
			off.Rx = r
		case ringTx:
			off.Tx = r
		}
		mem := make([]byte, 192+o.RingSize*int(ringSlotSize[i]))
		s.ringMem[i] = mem
	}
	if err := s.mapRings(off); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*ring{&s.fill, &s.comp, &s.rx, &s.tx} {
		*r.producer, *r.consumer = fakeStart, fakeStart
		r.cachedProd, r.cachedCons = fakeStart, fakeStart
	}
	s.ringMem = [4][]byte{} // not mmapped: nothing for Close to unmap
	s.umem = make([]byte, o.NumFrames*o.FrameSize)
	s.initFrames()
	s.Fill()
	t.Cleanup(func() { s.umem = nil; s.Close() })
	return s, &fakeKernel{s: s, headroom: uint64(unix.XDP_PACKET_HEADROOM + o.Headroom)}
}

// deliver receives packets: each takes a frame from the fill ring and
// appears on the rx ring, while both have room. It returns how many.
func (k *fakeKernel) deliver(pkts [][]byte) int {
	fill, rx := &k.s.fill, &k.s.rx
	n := 0
	for _, p := range pkts {
		fc := atomic.LoadUint32(fill.consumer)
		if atomic.LoadUint32(fill.producer) == fc {
			break
		}
		rp := atomic.LoadUint32(rx.producer)
		if rp-atomic.LoadUint32(rx.consumer) == rx.size {
			break
		}
		base := k.s.fillSlots[fc&fill.mask]
		addr := base + k.headroom
		copy(k.s.umem[addr:], p)
		k.s.rxSlots[rp&rx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(len(p))}
		atomic.StoreUint32(fill.consumer, fc+1)
		atomic.StoreUint32(rx.producer, rp+1)
		n++
	}
	return n
}

// send takes up to max descriptors off the tx ring, appends their frames to
// out and posts their addresses on the completion ring.
func (k *fakeKernel) send(max int, out [][]byte) [][]byte {
	tx, comp := &k.s.tx, &k.s.comp
	for ; max > 0; max-- {
		tc := atomic.LoadUint32(tx.consumer)
		if atomic.LoadUint32(tx.producer) == tc {
			break
		}
		cp := atomic.LoadUint32(comp.producer)
		if cp-atomic.LoadUint32(comp.consumer) == comp.size {
			break
		}
		d := k.s.txSlots[tc&tx.mask]
		out = append(out, append([]byte(nil), k.s.umem[d.Addr:d.Addr+uint64(d.Len)]...))
		k.s.compSlots[cp&comp.mask] = d.Addr
		atomic.StoreUint32(tx.consumer, tc+1)
		atomic.StoreUint32(comp.producer, cp+1)
	}
	return out
}

func TestOptionsInvalid(t *testing.T) {
	for _, o := range []Options{
		{NumFrames: -1}, {FrameSize: 1000}, {FrameSize: 8192}, {RingSize: 100},
		{Headroom: -1}, {Headroom: 2048}, {FrameSize: 2048, Headroom: 1700}, {Mode: 9},
	} {
		if _, err := Open(1, 0, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
	if _, err := Open(0, 0, Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("ifindex 0: %v", err)
	}
	if _, err := Open(1, -1, Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("queue -1: %v", err)
	}
}

// TestFakeTraffic runs random receive, free, echo, allocate, transmit and
// complete steps across the uint32 wrap of the ring indices, checking the
// frame invariant and the bytes after each step.
func TestFakeTraffic(t *testing.T) {
	s, k := newFake(t, Options{NumFrames: 96, RingSize: 32, Headroom: 16, NeedWakeup: true})
	r := rand.New(rand.NewPCG(3, 4))
	descs := make([]Desc, 16)
	addrs := make([]uint64, 16)
	var held []Desc // frames the "application" owns
	seq := 0
	var sentWant, sentGot [][]byte
	pkt := func(i int) []byte { return []byte{byte(i), byte(i >> 8), 0xaa, byte(i * 7)} }
	delivered, received := 0, 0
	for step := 0; step < 5000; step++ {
		switch r.IntN(6) {
		case 0: // the wire delivers a burst
			burst := make([][]byte, r.IntN(20))
			for i := range burst {
				burst[i] = pkt(seq + i)
			}
			n := k.deliver(burst)
			seq += n
			delivered += n
		case 1: // receive
			n := s.Receive(descs[:r.IntN(len(descs))+1])
			for _, d := range descs[:n] {
				if d.Addr&s.frameMask != k.headroom {
					t.Fatalf("rx addr %#x not at headroom %d", d.Addr, k.headroom)
				}
				if want := pkt(received); !bytes.Equal(s.Frame(d), want) {
					t.Fatalf("frame %d: % x, want % x", received, s.Frame(d), want)
				}
				received++
			}
			held = append(held, descs[:n]...)
		case 2: // free some held frames, then top up the fill ring
			n := r.IntN(len(held) + 1)
			if got := s.FreeDescs(held[:n]); got != n {
				t.Fatalf("FreeDescs = %d of %d", got, n)
			}
			held = held[n:]
			s.Fill()
		case 3: // allocate and transmit new frames, or echo held ones
			var out []Desc
			if r.IntN(2) == 0 {
				n := s.AllocFrames(addrs[:r.IntN(len(addrs))+1])
				for _, a := range addrs[:n] {
					b := s.Buffer(a)
					l := 1 + r.IntN(60)
					for i := 0; i < l; i++ {
						b[i] = byte(r.Uint32())
					}
					out = append(out, Desc{Addr: a, Len: uint32(l)})
				}
			} else {
				n := r.IntN(len(held) + 1)
				out = append(out, held[:n]...)
				held = held[n:]
			}
			for len(out) > 0 {
				n := s.Transmit(out)
				for _, d := range out[:n] {
					sentWant = append(sentWant, append([]byte(nil), s.Frame(d)...))
				}
				out = out[n:]
				if n == 0 || len(out) > 0 {
					sentGot = k.send(r.IntN(40), sentGot)
					s.Complete()
				}
			}
		case 4: // the kernel sends
			sentGot = k.send(r.IntN(40), sentGot)
		case 5:
			s.Complete()
		}
		if err := s.Check(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if a := s.Accounting(); a.App != uint32(len(held)) {
			t.Fatalf("step %d: app %d, held %d", step, a.App, len(held))
		}
	}
	// Drain everything and check nothing leaked.
	s.FreeDescs(held)
	for {
		n := s.Receive(descs)
		if n == 0 {
			break
		}
		received += n
		s.FreeDescs(descs[:n])
	}
	for {
		sentGot = k.send(100, sentGot)
		if s.Complete() == 0 && s.Accounting().Tx == 0 {
			break
		}
	}
	for i := range sentWant {
		if !bytes.Equal(sentWant[i], sentGot[i]) {
			t.Fatalf("sent frame %d differs", i)
		}
	}
	a := s.Accounting()
	if a.App != 0 || a.Tx != 0 || a.Free+a.Fill != a.Total || a.RxRing != 0 || delivered != received {
		t.Fatalf("after drain: %+v, delivered %d received %d", a, delivered, received)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Stats(); st.BadDescs != 0 {
		t.Fatalf("BadDescs %d", st.BadDescs)
	}
	if s.fill.cachedProd > fakeStart {
		t.Fatal("ring indices did not wrap; the test lost its point")
	}
	t.Logf("delivered %d, transmitted %d", delivered, len(sentWant))
}

func TestFakeBadDescs(t *testing.T) {
	s, k := newFake(t, Options{NumFrames: 16, RingSize: 8})
	addrs := make([]uint64, 2)
	if s.AllocFrames(addrs) != 2 {
		t.Fatal("AllocFrames")
	}
	bad := func(what string, f func()) {
		t.Helper()
		before := s.nBadDescs.Load()
		f()
		if s.nBadDescs.Load() == before {
			t.Fatalf("%s: not counted as bad", what)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	size := uint64(s.opts.FrameSize)
	bad("free out of range", func() { s.Free([]uint64{16 * size}) })
	bad("free a frame on the fill ring", func() { s.Free([]uint64{s.fillSlots[(s.fill.cachedProd-1)&s.fill.mask]}) })
	bad("double free", func() { s.Free(addrs[:1]); s.Free(addrs[:1]) })
	bad("transmit a free frame", func() {
		if n := s.Transmit([]Desc{{Addr: addrs[0], Len: 10}}); n != 1 {
			t.Fatalf("Transmit consumed %d", n)
		}
	})
	bad("transmit across the frame end", func() { s.Transmit([]Desc{{Addr: addrs[1] + 100, Len: uint32(size)}}) })
	if a := s.Accounting(); a.App != 0 || a.Tx != 0 {
		t.Fatalf("bad descriptors moved frames: %+v", a)
	}
	if len(k.send(10, nil)) != 0 {
		t.Fatal("a bad descriptor reached the tx ring")
	}
	if s.Frame(Desc{Addr: 16 * size, Len: 1}) != nil || s.Frame(Desc{Addr: size - 1, Len: 2}) != nil || s.Buffer(16*size) != nil {
		t.Fatal("Frame or Buffer returned memory outside a frame")
	}
}

func TestFakeAllocs(t *testing.T) {
	s, k := newFake(t, Options{NumFrames: 256, RingSize: 64, NeedWakeup: true})
	pkts := make([][]byte, 32)
	for i := range pkts {
		pkts[i] = make([]byte, 64)
	}
	descs := make([]Desc, 32)
	addrs := make([]uint64, 32)
	sent := make([][]byte, 0, 64)
	// Fill the rx ring once; the measured loop is the Socket's alone (the
	// fake kernel's copies would allocate).
	k.deliver(pkts)
	_ = sent
	allocs := testing.AllocsPerRun(200, func() {
		n := s.Receive(descs)
		s.FreeDescs(descs[:n])
		s.Fill()
		m := s.AllocFrames(addrs)
		for i, a := range addrs[:m] {
			descs[i] = Desc{Addr: a, Len: 60}
		}
		s.Transmit(descs[:m])
		s.Complete()
	})
	if allocs != 0 {
		t.Fatalf("data path allocates %v times per batch", allocs)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRxRing measures the Socket's side of the rx path per frame
// (Receive, Frame, FreeDescs, Fill in batches of 64) against a fake kernel;
// BenchmarkRxRing/memmove-desc beside it copies the same descriptors, the
// floor for handing 16-byte descriptors over.
func BenchmarkRxRing(b *testing.B) {
	b.Run("socket", func(b *testing.B) {
		s, _ := newFake(b, Options{NumFrames: 4096, RingSize: 2048})
		descs := make([]Desc, 64)
		// Pre-post descriptors the way the kernel would, without copying
		// payloads, so the loop measures only the Socket.
		rx, fill := &s.rx, &s.fill
		b.ResetTimer()
		for i := 0; i < b.N; i += 64 {
			fc := atomic.LoadUint32(fill.consumer)
			rp := atomic.LoadUint32(rx.producer)
			for j := uint32(0); j < 64; j++ {
				s.rxSlots[(rp+j)&rx.mask] = unix.XDPDesc{Addr: s.fillSlots[(fc+j)&fill.mask] + 256, Len: 64}
			}
			atomic.StoreUint32(fill.consumer, fc+64)
			atomic.StoreUint32(rx.producer, rp+64)
			n := s.Receive(descs)
			for _, d := range descs[:n] {
				_ = s.Frame(d)
			}
			s.FreeDescs(descs[:n])
			s.Fill()
		}
	})
	b.Run("memmove-desc", func(b *testing.B) {
		src := make([]unix.XDPDesc, 64)
		dst := make([]Desc, 64)
		for i := 0; i < b.N; i += 64 {
			for j := range src {
				dst[j] = Desc{Addr: src[j].Addr, Len: src[j].Len, Options: src[j].Options}
			}
		}
	})
}
