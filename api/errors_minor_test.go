package api

import (
	"fmt"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// TestErrorReplyForOlderClients: the codes added in 2.5 reach a client of
// 2.4 or before as the codes it knew for those errors, and a client of
// 2.5 as they are; other codes are the same for all.
func TestErrorReplyForOlderClients(t *testing.T) {
	for _, c := range []struct {
		err      error
		old, now flow.Code
	}{
		{fmt.Errorf("x: %w", flow.ErrHostSocket), flow.CodeConnect, flow.CodeHostSocket},
		{fmt.Errorf("x: %w", flow.ErrProhibited), flow.CodeNetUnreachable, flow.CodeProhibited},
		{fmt.Errorf("x: %w", flow.ErrBlackhole), flow.CodeNetUnreachable, flow.CodeBlackhole},
		{fmt.Errorf("x: %w", flow.ErrRefused), flow.CodeRefused, flow.CodeRefused},
	} {
		if got := ErrorReplyFor(c.err, 4).Code; got != c.old {
			t.Errorf("%v to a 2.4 client: code %d, want %d", c.err, got, c.old)
		}
		if got := ErrorReplyFor(c.err, VersionMinor).Code; got != c.now {
			t.Errorf("%v to a 2.%d client: code %d, want %d", c.err, VersionMinor, got, c.now)
		}
	}
}
