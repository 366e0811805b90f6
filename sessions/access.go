package sessions

import (
	"fmt"
	"slices"

	"github.com/xsessiond/xsessiond/flow"
)

// This file holds the session layer's part of authorization: pure rules
// over identities the caller (the daemon, from SO_PEERCRED) supplies. The
// layer itself knows nothing of processes.

// Sentinels of authorization and limits (see flow); errors.Is matches
// them across the control socket.
var (
	ErrPermission = flow.ErrPermission
	ErrLimit      = flow.ErrLimit
)

// SetNamespaceSecret replaces the secret of namespace id. Later attaches
// need the new secret; apps attached already keep their sessions. The
// default namespace has no secret.
func (l *Layer) SetNamespaceSecret(id string, secret uint64) error {
	if id == "" {
		return fmt.Errorf("the default namespace has no secret: %w", ErrInvalidValue)
	}
	l.lock()
	defer l.unlock()
	ns, ok := l.nss[id]
	if !ok {
		return fmt.Errorf("namespace %q: %w", id, ErrInvalidNamespace)
	}
	ns.cfg.Secret = secret
	return nil
}

// AccessList says which users may attach to a namespace: a peer whose uid
// is in UIDs, or whose primary or supplementary gid is in GIDs. An empty
// list lets anyone who can reach the control socket in.
type AccessList struct {
	UIDs []uint32
	GIDs []uint32
}

// Empty reports whether the list lets everyone in.
func (a AccessList) Empty() bool { return len(a.UIDs) == 0 && len(a.GIDs) == 0 }

// Allows reports whether uid with groups gids may attach.
func (a AccessList) Allows(uid uint32, gids []uint32) bool {
	if a.Empty() || slices.Contains(a.UIDs, uid) {
		return true
	}
	for _, g := range gids {
		if slices.Contains(a.GIDs, g) {
			return true
		}
	}
	return false
}

// PrivilegedPortEnd is the first port any user may bind, as in the kernel's
// default net.ipv4.ip_unprivileged_port_start.
const PrivilegedPortEnd = 1024

// PrivilegedPort reports whether binding port needs CAP_NET_BIND_SERVICE.
func PrivilegedPort(port uint16) bool { return port != 0 && port < PrivilegedPortEnd }

// overlapsOtherOwnerLocked returns ErrAddressInUse when binding e would
// put app a's listener beside a global listener of the same transport,
// family, port and FIB owned by another user whose address overlaps e's: a
// specific address over a wildcard, or a wildcard over a specific
// address. Linux refuses such a bind whatever SO_REUSEADDR says, as a
// socket of another user holds the port; the same user's listeners share
// a port so (exact addresses before the wildcard). Checked under the
// layer's lock with the bind it guards, so that two users' binds cannot
// both pass.
func (l *Layer) overlapsOtherOwnerLocked(a *app, e Endpoint) error {
	if e.Port == 0 {
		return nil
	}
	for _, ln := range l.glisten {
		le := ln.Endpoint
		if ln.Proxy || le.FIB != e.FIB || le.Transport != e.Transport || le.Port != e.Port || le.Family() != e.Family() ||
			le.IsZero() == e.IsZero() {
			continue
		}
		if o := l.apps[ln.App]; o != nil && o.opts.Owner != a.opts.Owner {
			what := "a wildcard listener"
			if e.IsZero() {
				what = "a listener of " + le.Addr.String()
			}
			return fmt.Errorf("%s of another user holds port %d: %w", what, e.Port, ErrAddressInUse)
		}
	}
	return nil
}
