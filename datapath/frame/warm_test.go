package frame

import "testing"

func TestWarmReadsTheFirstLines(t *testing.T) {
	long := make([]byte, 300)
	long[0], long[64], long[128] = 0x01, 0x02, 0x40 // 128 is past warmSpan
	mid := make([]byte, 65)
	mid[0], mid[64] = 0x04, 0x08
	short := []byte{0x10}
	frames := [][]byte{long, mid, short, nil, {}}
	if got, want := Warm(frames), byte(0x01^0x02^0x04^0x08^0x10); got != want {
		t.Fatalf("Warm = %#x, want %#x", got, want)
	}
	if got := Warm(nil); got != 0 {
		t.Fatalf("Warm(nil) = %#x", got)
	}
}

func TestWarmAllocatesNothing(t *testing.T) {
	frames := [][]byte{make([]byte, 128), make([]byte, 64)}
	if n := testing.AllocsPerRun(100, func() { Warm(frames) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
