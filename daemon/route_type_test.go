package daemon

import (
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/app"
)

// TestDialRouteTypesMatchKernel: a Dial to a destination whose route is
// unreachable, prohibit, blackhole or throw (with no table after it) fails
// as net.Dial from host B does, TCP and UDP alike: EHOSTUNREACH, EACCES,
// EINVAL and ENETUNREACH, in an *os.SyscallError "connect" under the
// *net.OpError, its fields as the kernel socket's.
func TestDialRouteTypesMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "routes"})
	for i, typ := range []string{"unreachable", "prohibit", "blackhole", "throw"} {
		prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 66, byte(i), 0}), 24)
		ipIn(t, rig.B, "route", "add", typ, prefix.String())
		dst := netip.AddrPortFrom(prefix.Addr().Next(), 80)
		for _, network := range []string{"tcp", "udp"} {
			kout, kerr := kernelDialOutcome(t, rig.B, network, dst.String())
			aout, aerr := appDialOutcome(a, network, dst.String())
			if aout != kout {
				t.Errorf("%s route, %s %v: app %s (%v), kernel %s (%v)", typ, network, dst, aout, aerr, kout, kerr)
				continue
			}
			if kerr != nil && aerr != nil {
				if k, got := dialFields(kerr, dst, true), dialFields(aerr, dst, true); k != got {
					t.Errorf("%s route, %s %v:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", typ, network, dst, k, kerr, got, aerr)
				}
			}
			t.Logf("%s route, %s: kernel %s, app %s (%v)", typ, network, kout, aout, aerr)
		}
	}
}
