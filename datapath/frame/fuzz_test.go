package frame

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzDecode from the decode test cases")

// FuzzDecode feeds arbitrary bytes to Decode: it must not panic, and what it
// reports must stay inside the frame. The seeds in testdata/fuzz/FuzzDecode
// are the frames of the decode tests (go test -run TestWriteSeeds
// -write-seeds rewrites them).
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		r := Decode(b, &p)
		if r >= numReasons {
			t.Fatalf("reason %d out of range", r)
		}
		if r == BadIPCsum && uint16(sumBytewise(b[p.L3Off:p.L3Off+int(b[p.L3Off]&0xf)*4], 0)) == 0xffff {
			t.Fatalf("IPv4 header checksum verifies by the reference, Decode says %v", r)
		}
		if r == NotUDP && p.Family == 6 {
			checkStrip(t, b[p.L3Off:], p.L4Off-p.L3Off, p.Proto)
		}
		if r != OK {
			return
		}
		checkSums(t, b, &p)
		if p.PayloadOff < 0 || p.PayloadLen < 0 || p.PayloadOff+p.PayloadLen > len(b) || p.Payload(b) == nil {
			t.Fatalf("payload %d+%d outside frame of %d", p.PayloadOff, p.PayloadLen, len(b))
		}
		if p.L3Off >= p.L4Off || p.L4Off+UDPHeaderLen != p.PayloadOff {
			t.Fatalf("offsets L3 %d L4 %d payload %d", p.L3Off, p.L4Off, p.PayloadOff)
		}
		if p.Family != 4 && p.Family != 6 {
			t.Fatalf("family %d", p.Family)
		}
		var q Packet
		if DecodeFlags(b, &q, SkipUDPChecksum) != OK || q != p {
			t.Fatalf("SkipUDPChecksum disagrees")
		}
	})
}

// checkSums verifies the checksums of a frame Decode accepted with the
// reference sum.
func checkSums(t *testing.T, b []byte, p *Packet) {
	t.Helper()
	l3, l4 := b[p.L3Off:], b[p.L4Off:p.PayloadOff+p.PayloadLen]
	var ps uint32
	if p.Family == 4 {
		if got := uint16(sumBytewise(l3[:p.L4Off-p.L3Off], 0)); got != 0xffff {
			t.Fatalf("accepted an IPv4 header summing to %#04x", got)
		}
		ps = sumBytewise(l3[12:20], uint32(ProtoUDP))
	} else {
		ps = sumBytewise(l3[8:40], uint32(ProtoUDP))
	}
	if l4[6] == 0 && l4[7] == 0 {
		return // IPv4 without a checksum (Decode refuses it over IPv6)
	}
	if got := uint16(sumBytewise(l4, ps+uint32(len(l4)))); got != 0xffff {
		t.Fatalf("accepted a UDP checksum summing to %#04x", got)
	}
}

func TestWriteSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-seeds to rewrite the fuzz seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{"empty": {}}
	for _, c := range decodeCases {
		b := c.p.build(t)
		seeds[c.name] = b
		seeds[c.name+"-cut"] = b[:len(b)*2/3]
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkStrip runs StripIPv6Options on a copy of ip, whose upper layer
// Decode found at l4, and checks what it returns: ip itself, or ip less
// its option headers, the upper layer and what follows it unchanged.
func checkStrip(t *testing.T, ip []byte, l4 int, proto flow.Transport) {
	t.Helper()
	c := append([]byte(nil), ip...)
	out := StripIPv6Options(c, l4)
	if len(out) == len(c) {
		if !bytes.Equal(out, ip) {
			t.Fatalf("StripIPv6Options changed a packet it did not strip")
		}
		return
	}
	ext := l4 - IPv6HeaderLen
	if len(out) != len(ip)-ext || !bytes.Equal(out[IPv6HeaderLen:], ip[l4:]) {
		t.Fatalf("stripped %d bytes of %d, upper layer at %d: not the upper layer after the header", len(ip)-len(out), len(ip), l4)
	}
	if !bytes.Equal(out[:4], ip[:4]) || !bytes.Equal(out[7:IPv6HeaderLen], ip[7:IPv6HeaderLen]) {
		t.Fatalf("stripped: header fields changed")
	}
	if pl := int(binary.BigEndian.Uint16(out[4:6])); pl != int(binary.BigEndian.Uint16(ip[4:6]))-ext {
		t.Fatalf("stripped: payload length %d", pl)
	}
	if flow.Transport(out[6]) != proto {
		t.Fatalf("stripped: next header %d, want the upper layer's %d", out[6], proto)
	}
}
