package frame

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// ipv6WithExt builds an IPv6 packet whose chain is exts (each a next
// header value and the header's bytes, its first byte filled in here),
// then a 20-byte TCP header and payload.
func ipv6WithExt(exts [][]byte, extTypes []byte, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = 5 << 4
	tcp = append(tcp, payload...)
	body := []byte{}
	for i, e := range exts {
		h := append([]byte(nil), e...)
		h[0] = 6 // TCP
		if i+1 < len(exts) {
			h[0] = extTypes[i+1]
		}
		body = append(body, h...)
	}
	body = append(body, tcp...)
	ip := make([]byte, IPv6HeaderLen, IPv6HeaderLen+len(body))
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:], uint16(len(body)))
	ip[6] = 6 // TCP
	if len(exts) > 0 {
		ip[6] = extTypes[0]
	}
	ip[7] = 64
	copy(ip[8:], bytes.Repeat([]byte{0xfd, 1}, 8))
	copy(ip[24:], bytes.Repeat([]byte{0xfd, 2}, 8))
	return append(ip, body...)
}

func TestStripIPv6Options(t *testing.T) {
	padN := []byte{0, 0, 1, 4, 0, 0, 0, 0}
	atomic := []byte{0, 0, 0, 0, 0, 0, 0, 7}   // fragment header, offset 0, M clear
	realFrag := []byte{0, 0, 0, 1, 0, 0, 0, 7} // M set
	routing := []byte{0, 0, 0, 0, 0, 0, 0, 0}  // type 0, segments left 0
	pay := []byte("payload")
	for _, c := range []struct {
		name  string
		exts  [][]byte
		types []byte
		strip bool
	}{
		{"none", nil, nil, false},
		{"destination options", [][]byte{padN}, []byte{ipv6DestOpts}, true},
		{"hop-by-hop, destination options", [][]byte{padN, padN}, []byte{ipv6HopByHop, ipv6DestOpts}, true},
		{"hop-by-hop, atomic fragment", [][]byte{padN, atomic}, []byte{ipv6HopByHop, ipv6Fragment}, true},
		{"a fragment", [][]byte{realFrag}, []byte{ipv6Fragment}, false},
		{"routing", [][]byte{routing}, []byte{ipv6Routing}, false},
		{"destination options, routing", [][]byte{padN, routing}, []byte{ipv6DestOpts, ipv6Routing}, false},
	} {
		ip := ipv6WithExt(c.exts, c.types, pay)
		orig := append([]byte(nil), ip...)
		ext := 8 * len(c.exts)
		out := StripIPv6Options(ip, IPv6HeaderLen+ext)
		if !c.strip {
			if !bytes.Equal(out, orig) {
				t.Errorf("%s: changed", c.name)
			}
			continue
		}
		want := ipv6WithExt(nil, nil, pay)
		if !bytes.Equal(out, want) {
			t.Errorf("%s:\n got % x\nwant % x", c.name, out, want)
		}
	}
	// What Decode would not have said: l4 beyond the chain, inside it, a
	// jumbogram, a packet shorter than its payload length.
	ip := ipv6WithExt([][]byte{padN}, []byte{ipv6DestOpts}, pay)
	for _, l4 := range []int{0, 40, 44, 56, len(ip) + 1} {
		c := append([]byte(nil), ip...)
		if out := StripIPv6Options(c, l4); !bytes.Equal(out, ip) {
			t.Errorf("l4 %d: changed", l4)
		}
	}
	jumbo := append([]byte(nil), ip...)
	binary.BigEndian.PutUint16(jumbo[4:], 0)
	if out := StripIPv6Options(append([]byte(nil), jumbo...), 48); !bytes.Equal(out, jumbo) {
		t.Error("jumbogram changed")
	}
	if out := StripIPv6Options(append([]byte(nil), ip[:50]...), 48); !bytes.Equal(out, ip[:50]) {
		t.Error("truncated packet changed")
	}
}
