package datapath

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/xsessiond/xsessiond/datapath/xsk"
)

// chainUMEM is a UMEM of 16-byte frames for the joiner's tests: the
// descriptor of frame i holds bytes of value i.
type chainUMEM []byte

func (u chainUMEM) frame(d xsk.Desc) []byte { return u[d.Addr : d.Addr+uint64(d.Len)] }

func desc(i int, n uint32, more bool) xsk.Desc {
	d := xsk.Desc{Addr: uint64(i * 16), Len: n}
	if more {
		d.Options = xsk.DescContinued
	}
	return d
}

// TestChainJoiner: single descriptors pass as they are, a chain becomes
// one frame of its parts in order, a chain open at the end of a batch is
// dropped with the rest of it in the next, and an arena too small for a
// chain drops that chain alone.
func TestChainJoiner(t *testing.T) {
	u := make(chainUMEM, 16*16)
	for i := range u {
		u[i] = byte(i / 16)
	}
	j := newChainJoiner(8, 16)
	frames, chained := make([][]byte, 8), make([]bool, 8)
	show := func(n int) string {
		s := ""
		for _, f := range frames[:n] {
			s += fmt.Sprintf("%x ", f)
		}
		return s
	}

	// 0 | 1 2 3 | 4 | 5 6 (open)
	n, joined, broken := j.join([]xsk.Desc{desc(0, 2, false), desc(1, 16, true), desc(2, 16, true), desc(3, 3, false),
		desc(4, 1, false), desc(5, 16, true), desc(6, 16, true)}, u.frame, frames, chained)
	if n != 3 || joined != 1 || broken != 1 {
		t.Fatalf("n %d joined %d broken %d: %s", n, joined, broken, show(n))
	}
	want := append(append(bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)...), 3, 3, 3)
	if !bytes.Equal(frames[0], []byte{0, 0}) || !bytes.Equal(frames[1], want) || !bytes.Equal(frames[2], []byte{4}) {
		t.Fatalf("frames %s", show(n))
	}
	if chained[0] || !chained[1] || chained[2] {
		t.Fatalf("chained %v", chained[:n])
	}

	// The rest of 5 6: 7 (more) 8 (last) are dropped; 9 passes.
	n, joined, broken = j.join([]xsk.Desc{desc(7, 16, true), desc(8, 4, false), desc(9, 5, false)}, u.frame, frames, chained)
	if n != 1 || joined != 0 || broken != 0 || !bytes.Equal(frames[0], bytes.Repeat([]byte{9}, 5)) || chained[0] {
		t.Fatalf("after a broken chain: n %d joined %d broken %d: %s", n, joined, broken, show(n))
	}

	// An arena of 32 bytes: a 48-byte chain is dropped, the next kept.
	small := newChainJoiner(2, 16)
	n, joined, broken = small.join([]xsk.Desc{desc(1, 16, true), desc(2, 16, true), desc(3, 16, false),
		desc(4, 16, true), desc(5, 8, false)}, u.frame, frames, chained)
	if n != 1 || joined != 1 || broken != 1 || len(frames[0]) != 24 || frames[0][0] != 4 || frames[0][23] != 5 {
		t.Fatalf("small arena: n %d joined %d broken %d: %s", n, joined, broken, show(n))
	}
}
