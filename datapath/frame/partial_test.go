package frame

import (
	"encoding/binary"
	"testing"
)

// partialSum is the pseudo-header sum a sender with checksum offload
// leaves in the UDP checksum field, computed word by word.
func partialSum(src, dst []byte, udpLen int) uint16 {
	var s uint32
	for _, b := range [][]byte{src, dst} {
		for i := 0; i < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	s += ProtoUDP + uint32(udpLen)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// TestDecode_PartialChecksum: a datagram whose checksum field holds the
// pseudo-header sum decodes fully and says PartialUDPCsum; any other
// wrong value stays BadUDPCsum, a full checksum stays OK.
func TestDecode_PartialChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, size := range []int{0, 1, 64, 1472} {
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i*7 + 3)
			}
			full := pkt{v6: v6, payload: payload, sport: 5300, dport: 9000}.build(t)
			var p Packet
			if r := Decode(full, &p); r != OK {
				t.Fatalf("v6 %v size %d: full checksum: %v", v6, size, r)
			}
			l4 := p.L4Off
			ulen := size + UDPHeaderLen
			var src, dst []byte
			if v6 {
				src, dst = full[14+8:14+24], full[14+24:14+40]
			} else {
				src, dst = full[14+12:14+16], full[14+16:14+20]
			}
			part := append([]byte(nil), full...)
			binary.BigEndian.PutUint16(part[l4+6:], partialSum(src, dst, ulen))
			p = Packet{}
			if r := Decode(part, &p); r != PartialUDPCsum {
				t.Fatalf("v6 %v size %d: partial checksum: %v", v6, size, r)
			}
			if p.SrcPort != 5300 || p.DstPort != 9000 || p.PayloadLen != size || string(p.Payload(part)) != string(payload) {
				t.Fatalf("v6 %v size %d: partial decode %+v", v6, size, p)
			}
			// One off the pseudo-header sum is neither.
			bad := append([]byte(nil), part...)
			binary.BigEndian.PutUint16(bad[l4+6:], partialSum(src, dst, ulen)+1)
			if r := Decode(bad, &p); r != BadUDPCsum {
				t.Fatalf("v6 %v size %d: near-partial checksum: %v", v6, size, r)
			}
			// The pseudo-header of another length is not the partial sum.
			binary.BigEndian.PutUint16(bad[l4+6:], partialSum(src, dst, ulen+2))
			if r := Decode(bad, &p); r != BadUDPCsum {
				t.Fatalf("v6 %v size %d: wrong-length partial sum: %v", v6, size, r)
			}
			if got := PartialUDPCsum.String(); got != "partial-csum" {
				t.Fatalf("name %q", got)
			}
		}
	}
}
