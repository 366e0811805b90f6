package api

import (
	"encoding/binary"
	"errors"
	"testing"
)

// TestShowPageRecords: a Show for a whole report is the one-byte record
// of version 2.3 (an older daemon takes it); a page adds After and Limit;
// a page of neither, which would re-encode as the one-byte record, and a
// page cut short are malformed.
func TestShowPageRecords(t *testing.T) {
	whole := encode(t, 5, &Show{What: ShowSessions})
	if got := len(whole) - HeaderSize; got != 1 {
		t.Fatalf("whole-report Show: %d body bytes, want 1 (the record of version 2.3)", got)
	}
	page := encode(t, 5, &Show{What: ShowSessions, After: 9, Limit: 3})
	if got := len(page) - HeaderSize; got != 1+8+4 {
		t.Fatalf("page Show: %d body bytes, want 13", got)
	}
	_, m, err := Decode(page)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.(*Show); s.What != ShowSessions || s.After != 9 || s.Limit != 3 || !s.Paged() {
		t.Fatalf("decoded %+v", s)
	}
	zeros := append([]byte(nil), page...)
	zeros[HeaderSize+1] = 0 // After 9 → 0; Limit set to 0 below
	for i := HeaderSize + 9; i < len(zeros); i++ {
		zeros[i] = 0
	}
	if _, _, err := Decode(zeros); !errors.Is(err, ErrMalformed) {
		t.Errorf("page of neither start nor limit: %v, want ErrMalformed", err)
	}
	cut := append([]byte(nil), page[:len(page)-4]...)
	binary.LittleEndian.PutUint32(cut[12:], uint32(len(cut)-HeaderSize)) // the header's body length
	if _, _, err := Decode(cut); !errors.Is(err, ErrMalformed) {
		t.Errorf("page without its limit: %v, want ErrMalformed", err)
	}
}
