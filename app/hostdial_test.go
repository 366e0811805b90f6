package app

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestProcAddrPort: local addresses as /proc/net/udp and udp6 print them
// on this (little-endian) machine.
func TestProcAddrPort(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the cases are a little-endian machine's listing")
	}
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"0100007F:1F90", "127.0.0.1:8080", true},
		{"00000000:0035", "0.0.0.0:53", true},
		{"00000000000000000000000001000000:1F91", "[::1]:8081", true},
		{"00000000000000000000000000000000:1F92", "[::]:8082", true},
		{"0100007F", "", false},
		{"0100007:1F90", "", false},
		{"0100007F:XYZ", "", false},
		{"0100007G:1F90", "", false},
	} {
		got, ok := procAddrPort(c.in)
		if ok != c.ok || ok && got != netip.MustParseAddrPort(c.want) {
			t.Errorf("procAddrPort(%q) = %v, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
