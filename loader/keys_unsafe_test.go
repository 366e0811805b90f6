package loader

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/xsessiond/xsessiond/flow"
)

// TestKeyLayout checks the keys' byte layout: the ports are in network
// byte order in memory, addresses as sessions stores them.
func TestKeyLayout(t *testing.T) {
	k, err := lstKey(3, &flow.FiveTuple{Local: flow.AddrBytes(v4Local), LocalPort: 0x1234, Proto: flow.TransportUDP, Family: flow.Family4})
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.Sizeof(k) != 24 {
		t.Fatalf("listener key is %d bytes, want 24", unsafe.Sizeof(k))
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&k)), unsafe.Sizeof(k))
	if binary.NativeEndian.Uint32(raw[0:]) != 3 || raw[4] != 10 || raw[7] != 2 || raw[8] != 0 ||
		raw[20] != 0x12 || raw[21] != 0x34 || raw[22] != 17 || raw[23] != 4 {
		t.Fatalf("listener key bytes % x", raw)
	}
	tu := tuple(flow.TransportTCP, v6Local, 80, v6Remote, 0xabcd)
	e, err := estKey(9, &tu)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.Sizeof(e) != 44 {
		t.Fatalf("established key is %d bytes, want 44", unsafe.Sizeof(e))
	}
	raw = unsafe.Slice((*byte)(unsafe.Pointer(&e)), unsafe.Sizeof(e))
	if raw[0] != 0xfd || raw[15] != 2 || raw[16] != 0xfd || raw[31] != 1 || raw[32] != 0 || raw[33] != 80 ||
		raw[34] != 0xab || raw[35] != 0xcd || raw[36] != 6 || raw[37] != 6 || binary.NativeEndian.Uint32(raw[40:]) != 9 {
		t.Fatalf("established key bytes % x", raw)
	}
	ifi, back := e.tuple()
	if ifi != 9 || back != tu {
		t.Fatalf("round trip: %d %+v, want 9 %+v", ifi, back, tu)
	}
}
