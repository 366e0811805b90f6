package daemon

import (
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/sessions"
)

// appIDOf is the session layer's id of app a.
func appIDOf(a *app.App) sessions.AppID { return sessions.AppID(a.Index()) }

// trackedFifos returns how many sessions and listeners of app the daemon
// keeps fifos of in its books (what metrics and show read).
func (d *Daemon) trackedFifos(app sessions.AppID) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.fifos[app])
}

// trackedDetached returns the apps the daemon keeps fifos of although
// they are not attached (any more).
func (d *Daemon) trackedDetached() []sessions.AppID {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []sessions.AppID
	for a := range d.fifos {
		if d.byApp[a] == nil {
			out = append(out, a)
		}
	}
	return out
}

// appFifoMemory returns the fifo memory the app's segment manager counts
// allocated (fifo.Manager.FifoMemory), -1 when the app is not attached.
func (d *Daemon) appFifoMemory(app sessions.AppID) int64 {
	d.mu.Lock()
	c := d.byApp[app]
	d.mu.Unlock()
	if c == nil || c.mgr == nil {
		return -1
	}
	return c.mgr.FifoMemory()
}
