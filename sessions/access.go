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

// ShadowsOtherOwner returns ErrAddressInUse when binding e (a specific
// address) in FIB fib would put a listener over a wildcard listener of the
// same transport, family and port in that FIB owned by a user other than
// uid, as Linux refuses such a bind without SO_REUSEADDR from the same
// user. owner gives the uid of an app's owner (false: unknown, never a
// conflict). A wildcard bind, or one over the same user's wildcard, is not
// refused here.
func ShadowsOtherOwner(ls []ListenerInfo, owner func(AppID) (uint32, bool), uid uint32, e flow.Endpoint, fib FIBID) error {
	if !e.Addr.IsValid() || e.Addr.IsUnspecified() || e.Port == 0 {
		return nil
	}
	for _, l := range ls {
		if l.FIB != fib {
			continue
		}
		le, err := flow.ParseURI(l.URI)
		if err != nil || le.Transport != e.Transport || le.Port != e.Port || !le.Addr.IsUnspecified() ||
			le.Addr.Is4() != e.Addr.Unmap().Is4() {
			continue
		}
		if u, ok := owner(l.App); ok && u != uid {
			return fmt.Errorf("%s: a wildcard listener of another user holds port %d: %w", e.URI(), e.Port, ErrAddressInUse)
		}
	}
	return nil
}
