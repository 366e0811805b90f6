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
// (AttachOptions.Owner, a uid) hold together, with the ports a PortKeeper
// keeps after their closed sessions (of which those in TIME-WAIT are given
// up before a bind or connect is refused). Root's apps are not bound, as
// the daemon's other per-uid limits do not bind them.

// PortKeeper is a Datapath that keeps ports past the end of the sessions
// that held them (a TCP connection's, while it drains after its app's
// close and in TIME-WAIT: the port of an active open stays reserved while
// the stack may still send or see the connection's segments).
// The layer counts them against their owner's bound; at the bound it has
// the owner's oldest TIME-WAIT ports released early before it refuses,
// as Linux reuses a port in TIME-WAIT for a new connection, so that an
// app opening connections at a high rate is held back only by the ones
// it has open or draining. Its methods must not block or call back into
// the Layer.
type PortKeeper interface {
	// KeptPorts returns how many ports it keeps after the sessions of
	// owner's apps.
	KeptPorts(owner uint32) int
	// ShedKept releases early n or more of the ports it keeps in
	// TIME-WAIT for owner's apps, oldest first (not those still
	// draining), as far as it has them, and returns how many it released.
	ShedKept(owner uint32, n int) int
}

// portRoomLocked reports whether app a may take one more port.
func (l *Layer) portRoomLocked(a *app) error {
	o := a.opts.Owner
	m := l.cfg.MaxPortsPerOwner
	if m <= 0 || o == 0 {
		return nil
	}
	held := l.owners[o]
	if k, ok := l.cfg.Datapath.(PortKeeper); ok && held < m {
		held += k.KeptPorts(o)
		if held >= m {
			held -= k.ShedKept(o, held-m+1)
		}
	}
	if held >= m {
		return fmt.Errorf("the apps of uid %d hold %d ports of the host (with those their closing connections keep), their limit: %w", o, held, ErrLimit)
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
	l.sessOrderOK = false
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
		l.sessOrderOK = false
	}
	if s.app.sess[s.h] == s {
		delete(s.app.sess, s.h)
		if s.wire {
			l.portsLocked(s.app, -1)
		}
	}
}
