package datapath

import (
	"net/netip"
	"testing"
)

// TestHandbackConflicts: a bind flushes the waiting sockets the kernel
// would refuse it for, and only those.
func TestHandbackConflicts(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"10.0.0.2:7000", "10.0.0.2:7000", true},
		{"10.0.0.2:7000", "10.0.0.2:7001", false},
		{"10.0.0.2:7000", "10.0.0.3:7000", false},
		{"0.0.0.0:7000", "10.0.0.3:7000", true},
		{"10.0.0.3:7000", "0.0.0.0:7000", true},
		{"[::]:7000", "10.0.0.3:7000", true},
		{"[::ffff:10.0.0.3]:7000", "10.0.0.3:7000", true},
		{"[fe80::1%veth0]:7000", "[fe80::1]:7000", true},
		{"[fd00::1]:7000", "[fd00::2]:7000", false},
	} {
		if got := conflicts(netip.MustParseAddrPort(c.a), netip.MustParseAddrPort(c.b)); got != c.want {
			t.Errorf("conflicts(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
