package datapath

import (
	"bytes"
	"testing"
)

// TestSynQueue: SYNs come out in their order, each its own bytes, a full
// queue refuses more, and a pop hands out at most what it is asked for.
func TestSynQueue(t *testing.T) {
	var q synQueue
	pkt := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 40+i%(synMaxLen-40)) }
	next := 0 // the next SYN pop must return
	pushed := 0
	check := func(out [][]byte) {
		t.Helper()
		for _, p := range out {
			if !bytes.Equal(p, pkt(next)) {
				t.Fatalf("SYN %d: got %d bytes of %d", next, len(p), p[0])
			}
			next++
		}
	}
	for round := 0; round < 3; round++ { // the ring wraps
		for q.size < synQueueLen {
			if !q.push(pkt(pushed)) {
				t.Fatalf("push refused with %d queued", q.size)
			}
			pushed++
		}
		if q.push(pkt(pushed)) {
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
	if q.size != 0 || next != pushed {
		t.Fatalf("%d left, %d of %d popped", q.size, next, pushed)
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
