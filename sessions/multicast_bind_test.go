package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestBind_TCPIPv6MulticastInvalid: a TCP bind of an IPv6 multicast
// address is an invalid value, as Linux's bind(2) of a TCP socket fails
// with EINVAL, not an address of another namespace; a UDP bind of the
// same address is the namespace's question (the app library binds the
// wildcard for it, as net.ListenPacket does).
func TestBind_TCPIPv6MulticastInvalid(t *testing.T) {
	for _, c := range []struct {
		uri  string
		want error
	}{
		{"tcp://[ff02::fb]:80", sessions.ErrInvalidValue},
		{"tcp://[ff05::3]:80", sessions.ErrInvalidValue},
		{"udp://[ff02::fb]:80", sessions.ErrNotInNamespace},
		{"tcp://[fd00::9]:80", sessions.ErrNotInNamespace},
	} {
		t.Run(c.uri, func(t *testing.T) {
			r := newRig(t)
			a := r.attach(0)
			_, err := r.l.BindURI(a, c.uri)
			wantErr(t, err, c.want)
		})
	}
}
