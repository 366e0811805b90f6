package daemon

import (
	"fmt"

	"github.com/xsessiond/xsessiond/nsbind"
)

// InterfaceLost is closed when the daemon's interface leaves its network
// namespace while the daemon runs (deleted, or moved to another
// namespace): its XDP program, its queues and their AF_XDP sockets went
// with it, and nothing reaches the sessions the daemon serves. The daemon
// logs it and goes on answering its control socket; xsessiond run stops
// with InterfaceLostErr, for its service manager to restart it
// (Restart=on-failure in deploy/xsessiond.service), which fails at start
// until the interface is back. A daemon without a datapath never closes
// it.
func (d *Daemon) InterfaceLost() <-chan struct{} { return d.lost }

// InterfaceLostErr says which interface left, once InterfaceLost is
// closed; nil before.
func (d *Daemon) InterfaceLostErr() error {
	select {
	case <-d.lost:
		return d.lostErr
	default:
		return nil
	}
}

// watchInterface logs the interface's changes of state (down, no carrier,
// up again) and closes d.lost when it is no longer in the view of its
// namespace. It looks at the view's snapshot on each of its
// events rather than at the events alone, so that a removal whose event the
// subscription dropped (counted in the view's stats) is still seen with
// the next one, a resync's among them. It ends when the view closes.
func (d *Daemon) watchInterface(view *nsbind.View) {
	events, _ := view.Subscribe(0) // closed with the view at teardown
	idx, name, netns := d.iface.Index, d.iface.Name, d.cfg.Datapath.NetnsName
	if netns == "" {
		netns = "the daemon's"
	}
	last := "up"
	if i, ok := view.Snapshot().Interface(idx); ok {
		last = ifaceState(i) // xsessiond run warns of a start on one not up
	}
	go func() {
		for range events {
			if i, ok := view.Snapshot().Interface(idx); ok {
				// A change of its state is logged as it comes, as the
				// kernel's link messages say it.
				if now := ifaceState(i); now != last {
					if now == "up" {
						d.log.Info("interface up and running: the datapath receives again", "iface", i.Name, "ifindex", idx, "was", last)
					} else {
						d.log.Warn("interface "+now+": nothing reaches the datapath until it is up and running", "iface", i.Name, "ifindex", idx)
					}
					last = now
				}
				continue
			}
			d.lostErr = fmt.Errorf("interface %s (ifindex %d) left netns %s (deleted, or moved to another namespace): its datapath is gone", name, idx, netns)
			d.log.Error("interface lost: the datapath has nothing to serve until a daemon is started on it again",
				"iface", name, "ifindex", idx, "netns", netns)
			close(d.lost)
			for range events { // until the view closes
			}
			return
		}
	}()
}

// servedInterface is the served interface as the netns view has it now;
// viewed is false without a datapath or a view, ok false when the view no
// longer has it.
func (d *Daemon) servedInterface() (i nsbind.Interface, viewed, ok bool) {
	if d.cfg.NoDatapath {
		return i, false, false
	}
	d.mu.Lock()
	r := d.netnss[d.ns.FIB()]
	d.mu.Unlock()
	if r == nil {
		return i, false, false
	}
	i, ok = r.view.Snapshot().Interface(d.iface.Index)
	return i, true, ok
}

// interfaceState is StatsView.InterfaceState.
func (d *Daemon) interfaceState() string {
	i, viewed, ok := d.servedInterface()
	switch {
	case !viewed:
		return ""
	case !ok:
		return "gone"
	}
	return ifaceState(i)
}

// ifaceState names the state of an interface the view has: down, no-carrier
// or up.
func ifaceState(i nsbind.Interface) string {
	switch {
	case !i.Up:
		return "down"
	case !i.Running:
		return "no-carrier"
	}
	return "up"
}

// interfaceName is the served interface's name now (it may have been
// renamed since the start), or the configured one when the view does not
// have it.
func (d *Daemon) interfaceName() string {
	if i, _, ok := d.servedInterface(); ok {
		return i.Name
	}
	return d.cfg.Datapath.IfName
}
