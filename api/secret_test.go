package api

import "testing"

// TestParseSecret: decimal digits or hex after 0x; what Go's number
// syntax would read otherwise than a person does is refused.
func TestParseSecret(t *testing.T) {
	for s, want := range map[string]uint64{"0": 0, "42": 42, "0x2a": 42, "0X2A": 42, "18446744073709551615": 1<<64 - 1} {
		if got, err := ParseSecret(s); err != nil || got != want {
			t.Errorf("ParseSecret(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "1_000", "0o17", "0b101", "0123", "-1", "+1", "18446744073709551616", "0x", "x1", "1e3"} {
		if got, err := ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) = %d, want an error", s, got)
		}
	}
}
