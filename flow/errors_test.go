package flow_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// TestCodeOf: each sentinel has its code and back; ErrConnect gives way
// to another sentinel wrapped with it, so that the errno the other one
// carries reaches the app.
func TestCodeOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want flow.Code
	}{
		{nil, flow.CodeOK},
		{errors.New("other"), flow.CodeUnknown},
		{fmt.Errorf("connect x: %w", flow.ErrConnect), flow.CodeConnect},
		{fmt.Errorf("connect x: %w: %w", flow.ErrConnect, flow.ErrUnreachable), flow.CodeUnreachable},
		{fmt.Errorf("connect x: %w: %w", flow.ErrConnect, flow.ErrLimit), flow.CodeLimit},
		{fmt.Errorf("connect x: %w: %w", flow.ErrConnect, flow.ErrAddressInUse), flow.CodeAddressInUse},
		{fmt.Errorf("connect x: %w: %w", flow.ErrConnect, syscall.ENETUNREACH), flow.CodeNetUnreachable},
		{fmt.Errorf("route: %w", syscall.ENETUNREACH), flow.CodeNetUnreachable},
		{fmt.Errorf("connect x: %w: %w", flow.ErrUnreachable, syscall.ENETUNREACH), flow.CodeUnreachable},
	} {
		if got := flow.CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	err, ok := flow.CodeUnreachable.Err()
	if !ok || !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("CodeUnreachable.Err() = %v, %v: want an error that is EHOSTUNREACH", err, ok)
	}
	if err, ok := flow.CodeNetUnreachable.Err(); !ok || !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("CodeNetUnreachable.Err() = %v, %v: want an error that is ENETUNREACH", err, ok)
	}
}
