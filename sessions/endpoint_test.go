package sessions_test

import (
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// session_endpoint_in_ns, session_endpoint_is_local, session_endpoint_is_zero

func TestEndpointChecks(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		name              string
		e                 sessions.Endpoint
		zero, local, inNS bool
	}{
		{"Zero4", sessions.Endpoint{Addr: zero4, IfIndex: 2, FIB: 1}, true, true, true},
		{"Zero6", sessions.Endpoint{Addr: zero6, IfIndex: 2, FIB: 2}, true, true, true},
		{"NoAddress", sessions.Endpoint{}, true, true, true},
		{"Loopback", sessions.Endpoint{Addr: netip.MustParseAddr("127.0.0.1"), FIB: 1}, false, true, true},
		// The seed refuses a loopback address in a namespace tied to an
		// interface; a kernel socket binds it, for local peers alone, and
		// so does the layer (a listener reached cut-through).
		{"LoopbackWithInterface", sessions.Endpoint{Addr: netip.MustParseAddr("127.0.0.1"), IfIndex: 2, FIB: 1}, false, true, true},
		{"InterfaceAddress", sessions.Endpoint{Addr: addrA, IfIndex: 2, FIB: 1}, false, false, true},
		{"AddressOfOtherInterface", sessions.Endpoint{Addr: addrOthr, IfIndex: 2, FIB: 1}, false, false, false},
		{"AddressOfOtherInterfaceNoIfIndex", sessions.Endpoint{Addr: addrOthr, FIB: 1}, false, false, true},
		{"Remote", sessions.Endpoint{Addr: remote, FIB: 1}, false, false, false},
		{"WrongFIB", sessions.Endpoint{Addr: addrA, IfIndex: 2, FIB: 10}, false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := sessions.EndpointIsZero(c.e); got != c.zero {
				t.Errorf("is zero = %v", got)
			}
			if got := sessions.EndpointIsLocal(c.e); got != c.local {
				t.Errorf("is local = %v", got)
			}
			if got := sessions.EndpointInNamespace(r.view, c.e); got != c.inNS {
				t.Errorf("in namespace = %v", got)
			}
		})
	}
}
