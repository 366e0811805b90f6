package tcp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
)

// refuser refuses every connection its listener gets (the peer gets RST).
type refuser struct{}

func (refuser) Accept(*tcp.Conn) (*fifo.Fifo, *fifo.Fifo, tcp.Handler, error) {
	return nil, nil, nil, errors.New("refused")
}
func (refuser) ListenerClosed(*tcp.Listener) {}

// FuzzLinkEndpointInject feeds frames into the link endpoint of a live
// stack with listeners on 10.0.0.2:80 and [fd00::2]:80. The stack trusts
// checksums (RXChecksumOffload), so random segments get past the checksum
// into gVisor's TCP. Mode byte 0 injects the input as is; 1 and 2 first
// fix the IPv4 or IPv6 header (version, lengths, protocol TCP, addresses,
// header checksum) so that the rest of the input lands in TCP parsing; 3
// and 4 make it a BIG TCP segment of 70,000 bytes whose IP length field
// says 0 (IPv4; IPv6 behind a hop-by-hop header holding the jumbo payload
// option), the input at its TCP header. Nothing may panic; the outbound
// packets must be well-formed TCP.
func FuzzLinkEndpointInject(f *testing.F) {
	var bad atomic.Value
	w := tcp.WriterFunc(func(p tcp.Packet) bool {
		b := p.AppendTo(nil)
		if len(b) != p.Len() || len(b) < 20 || (b[0]>>4 == 4) != (p.EtherType() == 0x0800) {
			bad.Store(b)
		}
		return true
	})
	s, err := tcp.NewStack(w, tcp.Options{RXChecksumOffload: true, Pumps: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	// verifying checks checksums itself (no RXChecksumOffload): the input
	// goes through that parsing too.
	verifying, err := tcp.NewStack(w, tcp.Options{Pumps: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { verifying.Close() })
	if err := verifying.AddAddress(netip.PrefixFrom(addrB, 24)); err != nil {
		f.Fatal(err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(addrB, 24), netip.PrefixFrom(addrB6, 64)} {
		if err := s.AddAddress(a); err != nil {
			f.Fatal(err)
		}
		if _, err := s.Listen(netip.AddrPortFrom(a.Addr(), 80), 0, 1, refuser{}); err != nil {
			f.Fatal(err)
		}
	}
	syn := []byte{0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0}
	f.Add(append([]byte{1}, syn...))
	f.Add(append([]byte{2}, syn...))
	f.Add([]byte{0, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
	f.Add([]byte{0, 0x60})
	f.Add(append([]byte{3}, syn...))
	f.Add(append([]byte{4}, syn...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		var pkt []byte
		switch in[0] % 5 {
		case 0:
			pkt = in[1:]
		case 1:
			pkt = make([]byte, 20+len(in)-1)
			copy(pkt[20:], in[1:])
			pkt[0], pkt[8], pkt[9] = 0x45, 64, 6
			binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
			copy(pkt[12:], addrA.AsSlice())
			copy(pkt[16:], addrB.AsSlice())
			binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
		case 2:
			pkt = make([]byte, 40+len(in)-1)
			copy(pkt[40:], in[1:])
			pkt[0], pkt[6], pkt[7] = 0x60, 6, 64
			binary.BigEndian.PutUint16(pkt[4:], uint16(len(in)-1))
			copy(pkt[8:], addrA6.AsSlice())
			copy(pkt[24:], addrB6.AsSlice())
		case 3:
			pkt = make([]byte, 70000)
			copy(pkt[20:], in[1:])
			pkt[0], pkt[8], pkt[9] = 0x45, 64, 6
			copy(pkt[12:], addrA.AsSlice())
			copy(pkt[16:], addrB.AsSlice())
			binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
		case 4:
			pkt = make([]byte, 70000)
			copy(pkt[48:], in[1:])
			pkt[0], pkt[6], pkt[7] = 0x60, 0, 64
			pkt[40], pkt[42], pkt[43] = 6, 0xc2, 4
			binary.BigEndian.PutUint32(pkt[44:], uint32(len(pkt)-40))
			copy(pkt[8:], addrA6.AsSlice())
			copy(pkt[24:], addrB6.AsSlice())
		}
		s.Link().Inject(pkt)
		s.Link().InjectBatch([][]byte{pkt, pkt[:len(pkt)/2]})
		next := following(pkt)
		s.Link().InjectBatch([][]byte{pkt, next, following(next), pkt})
		verifying.Link().Inject(pkt)
		verifying.Link().InjectBatch([][]byte{pkt, pkt, pkt[:len(pkt)/2]})
		if b := bad.Load(); b != nil {
			t.Fatalf("malformed outbound packet %x", b)
		}
	})
}

// following returns a copy of pkt whose TCP sequence number (where it would
// be) follows pkt's payload, so that InjectBatch may coalesce the two.
func following(pkt []byte) []byte {
	out := bytes.Clone(pkt)
	if len(out) == 0 {
		return out
	}
	ipLen := 40
	if out[0]>>4 == 4 {
		ipLen = int(out[0]&0xf) * 4
	}
	if len(out) < ipLen+13 {
		return out
	}
	payload := len(out) - ipLen - int(out[ipLen+12]>>4)*4
	seq := binary.BigEndian.Uint32(out[ipLen+4:])
	binary.BigEndian.PutUint32(out[ipLen+4:], seq+uint32(payload))
	return out
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
