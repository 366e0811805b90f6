package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"tcp://10.0.0.1/80", "udp://[::1]:53", "sctp://fd00::1/9", "tcp://1.2.3.4:65535", "x://", "tcp://[", ""} {
		f.Add(s)
	}
	f.Add("tcp://db.example:5432")
	f.Add("udp://a-1.b/53")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := sessions.ParseURI(s)
		// A URI names a host by address or by name, never both.
		_, name, port, named := flow.URIName(s)
		if named {
			if err == nil {
				t.Fatalf("%q parsed to %+v and splits as name %q", s, e, name)
			}
			u := "tcp://" + name + ":" + strconv.Itoa(int(port))
			if _, n2, p2, ok := flow.URIName(u); !ok || n2 != name || p2 != port {
				t.Fatalf("%q -> %q %d -> %q -> %q %d %v", s, name, port, u, n2, p2, ok)
			}
		}
		if err != nil {
			if !errors.Is(err, sessions.ErrInvalidURI) {
				t.Fatalf("error %v does not wrap ErrInvalidURI", err)
			}
			return
		}
		if !e.Addr.IsValid() || e.Addr.Is4In6() || e.Addr.Zone() != "" {
			t.Fatalf("%q parsed to address %v", s, e.Addr)
		}
		e2, err := sessions.ParseURI(e.URI())
		if err != nil || e2 != e {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, e, e.URI(), e2, err)
		}
	})
}

// FuzzLayerOps runs a random sequence of operations from several apps and
// checks the Layer's invariants after each one, plus that a feed mirror
// matches the snapshot at the end and that detaching everything leaves
// nothing behind.
func FuzzLayerOps(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 1, 0, 1, 0, 1, 2, 1, 1, 2, 0, 4, 1, 0, 5, 0})
	f.Add([]byte{0, 1, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 2, 1, 1, 3, 0, 0, 6, 0, 0, 4, 0, 0, 5, 0})
	f.Add([]byte{0, 0, 2, 0, 2, 1, 0, 1, 1, 0, 9, 1, 0, 3, 0, 8, 0, 1, 7, 1, 0, 5, 1, 5, 0})
	f.Add([]byte{0, 0, 2, 0, 3, 0, 8, 0, 2, 8, 3, 6, 8, 2, 0, 8, 0, 0x12, 9, 0, 0, 10, 3, 0, 8, 0, 0x42, 5, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 600 {
			ops = ops[:600]
		}
		// A small bound on the ports of an owner, so that the ops meet it.
		r := newRigWith(t, func(c *sessions.Config) { c.MaxPortsPerOwner = 3 })
		feed := r.l.Subscribe(1 << 14)
		defer feed.Close()
		const slots = 4
		var (
			apps      [slots]sessions.AppID
			live      [slots]bool
			listeners []sessions.Handle
			sessList  []sessions.Handle
			ruleIDs   []uint32
		)
		addrs := []netip.Addr{zero4, zero6, addrA, addrA6, addrOthr, remote, remote6, netip.MustParseAddr("127.0.0.1")}
		in := &opReader{b: ops}
		for in.more() {
			op := in.next() % 11
			slot := int(in.next()) % slots
			arg := in.next()
			app := apps[slot]
			if !live[slot] {
				app = sessions.AppID(200 + slot) // never attached: must fail cleanly
			}
			tr := []sessions.Transport{sessions.TransportTCP, sessions.TransportUDP, sessions.TransportSCTP}[int(arg>>6)%3]
			e := ep(tr, addrs[int(arg)%len(addrs)], uint16(arg>>3)%4+80)
			var desc string
			switch op {
			case 0:
				o := sessions.AttachOptions{ClientID: uint64(slot), Scope: sessions.Scope(arg%3 + 1), SegmentSize: 4 * sessions.DefaultFifoSize,
					Owner: uint32(arg>>3) % 3} // two owners and root
				if arg&0x80 != 0 {
					o.Proxy, o.ProxyTransports = true, []sessions.Transport{sessions.TransportTCP}
				}
				at, err := r.l.Attach(o)
				desc = fmt.Sprintf("attach slot %d %+v: %v", slot, o.Scope, err)
				if err == nil {
					if live[slot] {
						t.Fatalf("second attach of client %d succeeded", slot)
					}
					apps[slot], live[slot] = at.App, true
				}
			case 1:
				h, err := r.l.Bind(app, e)
				desc = fmt.Sprintf("bind app %d %s: %v", app, e.URI(), err)
				if err == nil {
					listeners = append(listeners, h)
				}
			case 2:
				res, err := r.l.Connect(app, e, uint32(in.i))
				desc = fmt.Sprintf("connect app %d %s: %v", app, e.URI(), err)
				if err == nil {
					sessList = append(sessList, res.Handle)
				}
			case 3:
				if len(listeners) > 0 {
					h := listeners[int(arg)%len(listeners)]
					err := r.l.Unbind(app, h)
					desc = fmt.Sprintf("unbind app %d %#x: %v", app, h, err)
				}
			case 4:
				if len(sessList) > 0 {
					h := sessList[int(arg)%len(sessList)]
					before := len(r.l.Sessions())
					err := r.l.Disconnect(app, h)
					desc = fmt.Sprintf("disconnect app %d %#x: %v", app, h, err)
					if err != nil && len(r.l.Sessions()) != before {
						t.Fatalf("%s: failed disconnect changed sessions", desc)
					}
				}
			case 5:
				err := r.l.Detach(app)
				desc = fmt.Sprintf("detach app %d: %v", app, err)
				if err == nil {
					live[slot] = false
					for _, li := range r.l.Listeners() {
						if li.App == app {
							t.Fatalf("%s: listener left %+v", desc, li)
						}
					}
					for _, s := range r.l.Sessions() {
						if s.App == app {
							t.Fatalf("%s: session left %+v", desc, s)
						}
					}
				}
			case 6: // a connect the datapath claims at once (UDP)
				res, err := r.l.Connect(app, e, uint32(in.i))
				desc = fmt.Sprintf("connect app %d %s: %v", app, e.URI(), err)
				if err == nil && !res.CutThrough {
					eh, err := r.l.Connected(uint32(arg)%2, res.Handle)
					desc = fmt.Sprintf("connect app %d %s, connected: %v", app, e.URI(), err)
					if err == nil {
						sessList = append(sessList, eh)
					}
				} else if err == nil {
					sessList = append(sessList, res.Handle)
				}
			case 7: // the datapath completes or fails a half-open session
				if len(sessList) > 0 {
					h := sessList[int(arg)%len(sessList)]
					if arg&1 == 0 {
						eh, err := r.l.Connected(uint32(arg>>1)%2, h)
						desc = fmt.Sprintf("connected %#x: %v", h, err)
						if err == nil {
							sessList = append(sessList, eh)
						}
					} else {
						err := r.l.ConnectFailed(h, sessions.ErrConnect)
						desc = fmt.Sprintf("connect failed %#x: %v", h, err)
					}
				}
			case 8:
				act := sessions.RuleAction(arg%3 + 1)
				rule := sessions.Rule{Transport: tr, Action: act, Scope: sessions.Scope(arg>>2%3 + 1), RemotePort: uint16(arg>>3) % 4}
				if act == sessions.RuleForward {
					rule.App = apps[int(arg>>4)%slots]
				}
				if arg&1 == 0 {
					rule.Remote = netip.PrefixFrom(remote, 24)
				}
				if slot == 3 {
					rule.Namespace = "blue"
				}
				if slot == 2 {
					rule.Local = netip.PrefixFrom(addrA, 32)
				}
				rule.Tag = fmt.Sprint("t", slot)
				id, err := r.l.AddRule(rule)
				desc = fmt.Sprintf("add rule %+v: %v", rule, err)
				if err == nil {
					ruleIDs = append(ruleIDs, id)
					if _, err := r.l.AddRule(rule); !errors.Is(err, sessions.ErrInvalidValue) {
						t.Fatalf("%s: the same rule again: %v", desc, err)
					}
				}
			case 9:
				if len(ruleIDs) > 0 {
					id := ruleIDs[int(arg)%len(ruleIDs)]
					err := r.l.DelRule(id)
					desc = fmt.Sprintf("del rule %d: %v", id, err)
					for _, ri := range r.l.Rules() {
						if ri.ID == id {
							t.Fatalf("%s: still listed", desc)
						}
					}
				}
			case 10:
				before := len(r.l.Rules())
				err := r.l.DelRulesByTag(fmt.Sprint("t", slot))
				desc = fmt.Sprintf("del rules by tag t%d: %v", slot, err)
				if after := len(r.l.Rules()); (err == nil) != (after < before) {
					t.Fatalf("%s: %d rules before, %d after", desc, before, after)
				}
			}
			if err := r.l.CheckInvariants(); err != nil {
				t.Fatalf("after %s: %v", desc, err)
			}
			// Every session handle resolves to its owner.
			for _, s := range r.l.Sessions() {
				for slot := range apps {
					if live[slot] && apps[slot] != s.App {
						if err := r.l.Disconnect(apps[slot], s.Handle); !errors.Is(err, sessions.ErrNotOwner) {
							t.Fatalf("after %s: app %d disconnecting %#x of app %d: %v", desc, apps[slot], s.Handle, s.App, err)
						}
					}
				}
			}
		}
		// The feed mirrors the snapshot, its entries keyed as the loader
		// keys them (an Add of a key present replaces its entry: a
		// half-open session becoming established).
		type feedKey struct {
			kind  sessions.ChangeKind
			fib   sessions.FIBID
			tuple sessions.FiveTuple
		}
		mirror := map[feedKey]sessions.Change{}
		for len(feed.C()) > 0 {
			c, err := feed.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if k := (feedKey{c.Kind, c.FIB, c.Tuple}); c.Op == sessions.OpAdd {
				mirror[k] = c
			} else {
				delete(mirror, k)
			}
		}
		_, snap := r.l.Snapshot()
		if len(snap) != len(mirror) {
			t.Fatalf("feed mirror has %d entries, snapshot %d", len(mirror), len(snap))
		}
		for _, c := range snap {
			if m, ok := mirror[feedKey{c.Kind, c.FIB, c.Tuple}]; !ok || m.Handle != c.Handle || m.IfIndex != c.IfIndex {
				t.Fatalf("snapshot %+v not mirrored", c)
			}
		}
		// Detaching everyone leaves nothing behind.
		for slot := range apps {
			if live[slot] {
				if err := r.l.Detach(apps[slot]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := r.l.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
		if n := len(r.l.Listeners()) + len(r.l.Sessions()); n != 0 {
			t.Fatalf("%d listeners and sessions after detaching all", n)
		}
		if _, snap := r.l.Snapshot(); len(snap) != 0 {
			t.Fatalf("snapshot after detaching all: %v", snap)
		}
		apps_, pairs, cts, segs := r.mem.Live()
		if apps_+pairs+cts+segs != 0 {
			t.Fatalf("memory alive after detaching all: apps %d pairs %d cts %d segments %d", apps_, pairs, cts, segs)
		}
		if m := r.mem.Misuse(); len(m) != 0 {
			t.Fatalf("fifo memory misused: %v", m)
		}
	})
}
