package frame

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
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
