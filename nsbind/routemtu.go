package nsbind

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// RouteMTU returns the MTU of the route to dst as the kernel would use it
// (RTM_GETROUTE): a route's mtu metric, or the path MTU the kernel learned
// for dst from ICMP "fragmentation needed" or "packet too big" (a cached
// route exception). 0: the route sets none (the interface's MTU applies).
func (n *Namespace) RouteMTU(dst netip.Addr) (int, error) {
	verb := "route mtu " + dst.String() + " in " + n.desc
	d, err := checkUnicast(dst)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", verb, err)
	}
	var mtu int
	err = n.handle(verb, func(h *netlink.Handle) error {
		rs, err := h.RouteGet(d.AsSlice())
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		if len(rs) > 0 {
			mtu = rs[0].MTU
		}
		return nil
	})
	return mtu, err
}
