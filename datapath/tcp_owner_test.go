package datapath

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// The apps of one user share a group for the bound on TCP buffers; each of
// root's apps is a group of its own.
func TestTCPOwnerGroups(t *testing.T) {
	p := &tcpPath{users: map[sessions.AppID]uint32{}}
	p.setUser(1, 1000)
	p.setUser(2, 1000)
	p.setUser(3, 1001)
	p.setUser(4, 0)
	p.setUser(5, 0)
	g := func(app sessions.AppID) uint64 { return bufferGroup(p.owner(app)) }
	if p.owner(1) == p.owner(2) {
		t.Fatal("two apps of one user have one owner number: the Stack's per-app bounds would count them together")
	}
	if g(1) != g(2) || g(1) == g(3) || g(4) == g(5) || g(4) == g(1) || g(9) == g(4) {
		t.Fatalf("groups: user 1000 %#x %#x, user 1001 %#x, root %#x %#x, unknown %#x", g(1), g(2), g(3), g(4), g(5), g(9))
	}
}
