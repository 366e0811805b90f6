package flow_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// TestURISchemeErrorsOfferWhatServes: a URI without a scheme, or with one
// that is not a transport, is told the forms bind and connect serve, once,
// and not sctp://, which they refuse.
func TestURISchemeErrorsOfferWhatServes(t *testing.T) {
	for _, c := range []struct{ uri, want string }{
		{"0.0.0.0:9000", `invalid URI "0.0.0.0:9000": missing scheme (want tcp://ADDR:PORT or udp://ADDR:PORT)`},
		{"http://0.0.0.0:9000", `invalid URI "http://0.0.0.0:9000": unknown scheme "http" (want tcp://ADDR:PORT or udp://ADDR:PORT)`},
	} {
		_, err := flow.ParseURI(c.uri)
		if !errors.Is(err, flow.ErrInvalidURI) {
			t.Fatalf("ParseURI(%q): %v, want ErrInvalidURI", c.uri, err)
		}
		if err.Error() != c.want {
			t.Errorf("ParseURI(%q):\n got %q\nwant %q", c.uri, err, c.want)
		}
		if strings.Contains(err.Error(), "sctp") {
			t.Errorf("ParseURI(%q) offers sctp: %v", c.uri, err)
		}
	}
}
