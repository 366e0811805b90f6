package app

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// TestDgramSizeErrorSaysWhy: a datagram larger than IP carries is refused
// with EMSGSIZE and ErrMessageTooLong under an error that names its size
// and the family's bound, not the fifo's room; the largest one passes.
func TestDgramSizeErrorSaysWhy(t *testing.T) {
	for _, c := range []struct {
		remote string
		max    int
		fam    string
	}{
		{"10.0.0.1:53", MaxDatagram4, "IPv4"},
		{"[::ffff:10.0.0.1]:53", MaxDatagram4, "IPv4"},
		{"[fd00::1]:53", MaxDatagram6, "IPv6"},
	} {
		remote := netip.MustParseAddrPort(c.remote)
		if err := checkDgramSize(c.max, remote); err != nil {
			t.Errorf("%s: %d bytes: %v", c.remote, c.max, err)
		}
		err := checkDgramSize(c.max+1, remote)
		if !errors.Is(err, syscall.EMSGSIZE) || !errors.Is(err, ErrMessageTooLong) {
			t.Fatalf("%s: %d bytes: %v, want EMSGSIZE and ErrMessageTooLong", c.remote, c.max+1, err)
		}
		for _, want := range []string{c.fam, "datagram of", "bytes"} {
			if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "fifo") {
				t.Errorf("%s: %q does not say %q (or speaks of the fifo)", c.remote, err, want)
			}
		}
	}
}
