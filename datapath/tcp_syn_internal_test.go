package datapath

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// TestSynQueue: every SYN comes out once, with its own bytes, in its
// order among those to its port's bucket; a full queue refuses more; a
// pop hands out at most what it is asked for; freed slots are used again.
func TestSynQueue(t *testing.T) {
	q := newSynQueue()
	// SYN i goes to port i%7 and carries i in its first two bytes.
	pkt := func(i int) []byte {
		p := make([]byte, 40+i%(synMaxLen-40))
		binary.BigEndian.PutUint16(p, uint16(i))
		p[len(p)-1] = byte(i)
		return p
	}
	pushed, popped := 0, 0
	last := map[uint8]int{} // bucket: the last SYN popped of it
	check := func(out [][]byte) {
		t.Helper()
		for _, p := range out {
			i := int(binary.BigEndian.Uint16(p))
			if !bytes.Equal(p, pkt(i)) {
				t.Fatalf("SYN %d: wrong bytes", i)
			}
			b := synBucket(uint16(i % 7))
			if l, ok := last[b]; ok && l >= i {
				t.Fatalf("SYN %d of bucket %d after SYN %d", i, b, l)
			}
			last[b] = i
			popped++
		}
	}
	for round := 0; round < 3; round++ { // slots freed are used again
		for q.size < synQueueLen {
			if !q.push(pkt(pushed), uint16(pushed%7)) {
				t.Fatalf("push refused with %d queued", q.size)
			}
			pushed++
		}
		if q.push(pkt(pushed), uint16(pushed%7)) {
			t.Fatal("a full queue took another SYN")
		}
		if out := q.pop(synShare); len(out) != synShare {
			t.Fatalf("pop(%d) gave %d", synShare, len(out))
		} else {
			check(out)
		}
		check(q.pop(synQueueLen / 2))
	}
	check(q.pop(synQueueLen))
	if q.size != 0 || popped != pushed || q.busy != 0 {
		t.Fatalf("%d left (busy %#x), %d of %d popped", q.size, q.busy, popped, pushed)
	}
	if int(q.fresh) != synQueueLen {
		t.Fatalf("%d slots used", q.fresh)
	}
}

// TestIsSyn: only a SYN without ACK, RST or FIN is set aside.
func TestIsSyn(t *testing.T) {
	for _, c := range []struct {
		flags byte
		want  bool
	}{
		{tcpFlagSYN, true},
		{tcpFlagSYN | 0x08 | 0x20, true}, // PSH, URG
		{tcpFlagSYN | 0xc0, true},        // ECE, CWR (an ECN setup)
		{tcpFlagSYN | tcpFlagACK, false},
		{tcpFlagSYN | tcpFlagRST, false},
		{tcpFlagSYN | tcpFlagFIN, false},
		{tcpFlagACK, false},
		{0, false},
	} {
		f := make([]byte, 14+20+20)
		f[14+20+13] = c.flags
		if got := isSyn(f, 34); got != c.want {
			t.Errorf("flags %#x: isSyn %v, want %v", c.flags, got, c.want)
		}
	}
	if isSyn(make([]byte, 40), 34) {
		t.Error("a frame cut inside the TCP header counted as a SYN")
	}
}

// TestSynQueuePortShare: SYNs to one port take at most synPortShare of
// the queue, the others' SYNs still find room, and a SYN popped makes
// room for its port again.
func TestSynQueuePortShare(t *testing.T) {
	q := newSynQueue()
	syn := make([]byte, 60)
	for i := 0; i < synPortShare; i++ {
		if !q.push(syn, 7000) {
			t.Fatalf("SYN %d to port 7000 refused", i)
		}
	}
	if q.push(syn, 7000) {
		t.Fatal("port 7000 took more than its share")
	}
	other := 0
	for p := uint16(1); q.size < synQueueLen; p++ {
		if synBucket(p) == synBucket(7000) {
			continue
		}
		if !q.push(syn, p) {
			t.Fatalf("a SYN to port %d refused with %d queued", p, q.size)
		}
		other++
	}
	if other != synQueueLen-synPortShare {
		t.Fatalf("%d other SYNs queued", other)
	}
	if q.push(syn, 7001) {
		t.Fatal("a full queue took a SYN")
	}
	q.pop(synBuckets) // one of each bucket's: one of port 7000's too
	if !q.push(syn, 7000) {
		t.Fatal("no room for port 7000 after one of its SYNs left")
	}
	for p := 0; p < 1<<16; p++ {
		if b := synBucket(uint16(p)); b >= synBuckets {
			t.Fatalf("port %d: bucket %d", p, b)
		}
	}
	// The buckets take turns: a SYN to another port comes out first or
	// second of the thousand waiting.
	for q.size > 0 {
		q.pop(synQueueLen)
	}
	for i := 0; i < 1000; i++ {
		q.push(syn, 7000)
	}
	q.push([]byte{1}, 7002)
	if out := q.pop(2); len(out) != 2 || len(out[0]) != 1 && len(out[1]) != 1 {
		t.Fatal("the SYN to port 7002 waited behind those to port 7000")
	}
	for _, pair := range [][2]uint16{{7000, 7002}, {80, 443}, {80, 8080}, {443, 8443}} {
		if synBucket(pair[0]) == synBucket(pair[1]) {
			t.Errorf("ports %d and %d share a bucket", pair[0], pair[1])
		}
	}
}

// TestSynPacer: SYNs go as they come until more than synPressure wait;
// then at most the tokens the rate gave since, never more than synBurst
// at once; no rate, no pace.
func TestSynPacer(t *testing.T) {
	const rate = 10000.0
	var p synPacer
	if n := p.take(500, synQueueLen, 0); n != 500 {
		t.Fatalf("no rate: %d of 500", n)
	}
	p.at = time.Now().Add(-time.Second)
	if n := p.take(500, synPressure, rate); n != 500 {
		t.Fatalf("%d queued: %d of 500, want all", synPressure, n)
	}
	if n := p.take(500, synPressure+1, rate); n != synBurst {
		t.Fatalf("backed up after a quiet second: %d of 500, want the burst, %d", n, synBurst)
	}
	// A token is 100 µs: the bounds below leave the test a millisecond
	// between its calls.
	if n := p.take(500, synQueueLen, rate); n > 10 {
		t.Fatalf("backed up, its tokens spent: %d of 500", n)
	}
	p.at = p.at.Add(-2 * time.Millisecond) // 20 tokens at 10,000 a second
	if n := p.take(500, synQueueLen, rate); n < 20 || n > 30 {
		t.Fatalf("backed up, 2 ms later: %d, want about 20", n)
	}
	if n := p.take(500, synQueueLen, rate); n > 10 {
		t.Fatalf("again at once: %d", n)
	}
}
