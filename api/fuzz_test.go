package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// FuzzServeConn feeds arbitrary record sequences (each a little-endian
// uint16 length and that many bytes) to a served connection: the server
// must never panic, answer only with records that decode, end the
// connection when the client stops, count exactly one disconnect, and
// never answer HelloReply to a conversation that did not open with a good
// Hello.
func FuzzServeConn(f *testing.F) {
	rec := func(recs ...[]byte) []byte {
		var b []byte
		for _, r := range recs {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(r)))
			b = append(b, r...)
		}
		return b
	}
	hello, _ := AppendRecord(nil, 1, 0, &Hello{Major: VersionMajor})
	show, _ := AppendRecord(nil, 2, 0, &Show{What: ShowApps})
	more, _ := AppendRecord(nil, 3, FlagMore, &ShowReply{JSON: []byte("{")})
	attach, _ := AppendRecord(nil, 4, 0, &Attach{Namespace: "blue", Secret: 42})
	f.Add(rec(hello, show))
	f.Add(rec(hello, more, show))
	f.Add(rec(more, hello))
	f.Add(rec(hello, attach, show, hello))
	f.Add(rec([]byte("GET / HTTP/1.0\r\n\r\n")))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b, err := Pair()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		s := &Server{Handler: okHandler{}, SendTimeout: time.Second, HelloTimeout: time.Second, IdleTimeout: time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeConn(context.Background(), b)
		}()
		goodHello := false
		for i := 0; len(in) >= 2; i++ {
			n := int(binary.LittleEndian.Uint16(in))
			in = in[2:]
			n = min(n, len(in))
			r := in[:n]
			in = in[n:]
			if i == 0 {
				if _, m, err := Decode(r); err == nil && m.Type() == TypeHello && m.(*Hello).Major == VersionMajor {
					goodHello = true
				}
			}
			var serr error
			a.rc.Write(func(fd uintptr) bool {
				serr = unix.Sendmsg(int(fd), r, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
				return serr != unix.EAGAIN
			})
			if serr != nil {
				break
			}
		}
		a.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
		a.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			m, fds, err := a.Recv()
			closeFDs(fds)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("client side: %v", err)
				}
				break
			}
			if m.Type() == TypeHelloReply && !goodHello {
				t.Fatal("HelloReply to a conversation without a good Hello first")
			}
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn still running after the client hung up")
		}
		var total uint64
		for _, n := range s.Stats().Disconnects {
			total += n
		}
		if total != 1 {
			t.Fatalf("disconnects %v, want exactly one", s.Stats().ByReason())
		}
	})
}
