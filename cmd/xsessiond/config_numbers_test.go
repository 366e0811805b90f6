package main

import (
	"strings"
	"testing"
)

// TestParseConfigNumberForms checks that a whole number in the config
// file is read as the CLI reads one: decimal digits, or hex after 0x; a
// leading 0 (octal 8 to the YAML decoder for 010), 0o, 0b and underscores
// are refused with the line and the form to give, not read as another
// number.
func TestParseConfigNumberForms(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"namespaces: [{id: x, iface: a, secret: 0123}]\n", "line 1: 0123 has a leading 0"},
		{"interfaces: [{name: a, queues: 010}]\n", "line 1: 010 has a leading 0"},
		{"interfaces: [{name: a, queues: 0o10}]\n", "line 1: 0o10 is in a base other than 10 or 16"},
		{"interfaces: [{name: a, batch: 0b11}]\n", "line 1: 0b11 is in a base other than 10 or 16"},
		{"limits: {segment_memory_per_uid: 1_073_741_824}\n", "line 1: 1_073_741_824 has an underscore"},
		{"namespaces: [{id: x, iface: a, allow_uids: [1, 01000]}]\n", "line 1: 01000 has a leading 0"},
		{"tcp:\n  max_time_wait: -010\n", "line 2: -010 has a leading 0"},
	} {
		_, err := ParseConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "give it in decimal digits") {
			t.Errorf("%q: %v, want %q in it and the form to give", c.yaml, err, c.want)
		}
	}
	cfg, err := ParseConfig([]byte("interfaces: [{name: a, queues: 10, batch: 0}]\nnamespaces: [{id: x, iface: a, secret: 0x2a}, {id: y, iface: a, secret: 42}]\ntcp: {syn_rate: -1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if q := cfg.Interfaces[0].Queues; q != 10 {
		t.Errorf("queues: 10 read as %d", q)
	}
	if a, b := cfg.Namespaces[0].Secret, cfg.Namespaces[1].Secret; a != 42 || b != 42 {
		t.Errorf("secrets 0x2a and 42 read as %d and %d", a, b)
	}
}
