package api

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from the samples")

const seedDir = "testdata/fuzz/FuzzDecode"

// FuzzDecode feeds arbitrary records to Decode: it must never panic, every
// error must be an ErrMalformed, and every accepted record must re-encode
// to the very same bytes.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, rec []byte) {
		h, m, err := Decode(rec)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v (message %v) is not a clean ErrMalformed", err, m)
			}
			return
		}
		if n := m.FDs(); n < 0 || n > MaxFDs {
			t.Fatalf("%v claims %d descriptors", m.Type(), n)
		}
		again, err := AppendRecord(nil, h.ID, h.Flags, m)
		if err != nil {
			t.Fatalf("accepted %v does not re-encode: %v", m.Type(), err)
		}
		if !bytes.Equal(again, rec) {
			t.Fatalf("%v re-encodes differently:\n got %x\nwant %x", m.Type(), again, rec)
		}
	})
}

// TestFuzzSeeds checks that the committed corpus has a seed of every
// message type (run with -update-seeds to rewrite it).
func TestFuzzSeeds(t *testing.T) {
	seeds := map[string][]byte{}
	for i, m := range samples() {
		seeds[fmt.Sprintf("type-%v-%d", m.Type(), i)] = encode(t, uint32(i+1), m)
	}
	more, err := AppendRecord(nil, 3, FlagMore, &ShowReply{JSON: []byte(`{"a":`)})
	if err != nil {
		t.Fatal(err)
	}
	seeds["type-ShowReply-more"] = more
	for _, c := range malformedCases(t) {
		if len(c.rec) <= 512 {
			seeds["bad-"+safeName(c.name)] = c.rec
		}
	}
	if *updateSeeds {
		if err := os.RemoveAll(seedDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, rec := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", rec)
			if err := os.WriteFile(filepath.Join(seedDir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name := range seeds {
		if _, err := os.Stat(filepath.Join(seedDir, name)); err != nil {
			t.Errorf("seed %s missing (go test ./api -run TestFuzzSeeds -update-seeds): %v", name, err)
		}
	}
}

func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}
