package nsbind

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestActiveRxQueues: a veth made without a queue count allocates a queue
// per possible CPU (IFLA_NUM_RX_QUEUES) but uses one; AF_XDP can bind only
// the used ones, and ActiveRxQueues must say so.
func TestActiveRxQueues(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 3})
	ns, err := OpenNamed(p.B.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if q, err := ns.ActiveRxQueues(p.B.Link); err != nil || q != 3 {
		t.Fatalf("3-queue veth: ActiveRxQueues = %d, %v; want 3", q, err)
	}
	// A second veth pair inside B with the kernel's default queue count.
	if err := p.B.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dflt0"}, PeerName: "dflt1"})
	}); err != nil {
		t.Fatal(err)
	}
	ifc, err := ns.InterfaceByName("dflt0")
	if err != nil {
		t.Fatal(err)
	}
	q, err := ns.ActiveRxQueues("dflt0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default veth: %d rx queues allocated, %d in use", ifc.RxQueues, q)
	if q != 1 {
		t.Fatalf("default veth: ActiveRxQueues = %d (allocated %d), want 1", q, ifc.RxQueues)
	}
	if _, err := ns.ActiveRxQueues("nosuch0"); err == nil {
		t.Fatal("ActiveRxQueues of a missing interface succeeded")
	}
}
