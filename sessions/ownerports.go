package sessions

import "fmt"

// Ports of an owner.
//
// An app with global scope holds ports in the host's stack through the
// Datapath: each global listener's (a kernel socket bound to it) and each
// wire connect's local port (an ephemeral one of the kernel's range).
// Without a bound one user's apps, each with as many sessions as its fifo
// memory holds, could take every ephemeral port of the host: the other
// users' apps and the host's own connects would then fail with
// EADDRNOTAVAIL. Config.MaxPortsPerOwner bounds what the apps of one owner
// (AttachOptions.Owner, a uid) hold together. Root's apps are not bound,
// as the daemon's other per-uid limits do not bind them.

// portRoomLocked reports whether app a may take one more port.
func (l *Layer) portRoomLocked(a *app) error {
	o := a.opts.Owner
	if m := l.cfg.MaxPortsPerOwner; m > 0 && o != 0 && l.owners[o] >= m {
		return fmt.Errorf("the apps of uid %d hold %d ports of the host, their limit: %w", o, l.owners[o], ErrLimit)
	}
	return nil
}

// portsLocked counts d ports more (or fewer) held by app a.
func (l *Layer) portsLocked(a *app, d int) {
	a.ports += d
	if o := a.opts.Owner; o != 0 {
		if l.owners[o] += d; l.owners[o] <= 0 {
			delete(l.owners, o)
		}
	}
}

// linkSessLocked enters s in the tables of the layer and of its app.
func (l *Layer) linkSessLocked(s *session) {
	l.sess[s.h] = s
	if s.app.sess[s.h] != s {
		s.app.sess[s.h] = s
		if s.wire {
			l.portsLocked(s.app, 1)
		}
	}
}

// unlinkSessLocked removes s from those tables (again: a no-op).
func (l *Layer) unlinkSessLocked(s *session) {
	if l.sess[s.h] == s {
		delete(l.sess, s.h)
	}
	if s.app.sess[s.h] == s {
		delete(s.app.sess, s.h)
		if s.wire {
			l.portsLocked(s.app, -1)
		}
	}
}
