package sessions

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"slices"
)

// Namespaces: the app namespaces apps attach to (seed: app_namespace.c).

// NamespaceConfig describes an app namespace.
type NamespaceConfig struct {
	ID      string `json:"id"`
	Secret  uint64 `json:"-"`
	IfIndex int    `json:"ifindex"` // the namespace's interface in its Linux netns; 0: none
	FIB4    FIBID  `json:"fib4"`
	FIB6    FIBID  `json:"fib6"`
}

func (c NamespaceConfig) fib(fam uint8) FIBID {
	if fam == Family6 {
		return c.FIB6
	}
	return c.FIB4
}

type namespace struct {
	cfg   NamespaceConfig
	apps  int
	local map[listenKey]*Listener // the local table: zero-address listeners only
}

// AddNamespace adds an app namespace. The default namespace ("") always
// exists; see SetDefaultNamespace.
func (l *Layer) AddNamespace(c NamespaceConfig) error {
	l.lock()
	defer l.unlock()
	if _, ok := l.nss[c.ID]; ok {
		return fmt.Errorf("namespace %q: %w", c.ID, ErrNamespaceExists)
	}
	l.nss[c.ID] = &namespace{cfg: c, local: map[listenKey]*Listener{}}
	return nil
}

// DelNamespace removes an app namespace with no apps attached, and its
// rules.
func (l *Layer) DelNamespace(id string) error {
	l.lock()
	defer l.unlock()
	ns, ok := l.nss[id]
	if !ok || id == "" {
		if id == "" {
			return fmt.Errorf("the default namespace cannot be deleted: %w", ErrInvalidValue)
		}
		return fmt.Errorf("namespace %q: %w", id, ErrInvalidNamespace)
	}
	if ns.apps > 0 {
		return fmt.Errorf("namespace %q: %d apps: %w", id, ns.apps, ErrNamespaceInUse)
	}
	delete(l.nss, id)
	l.ruleList = slices.DeleteFunc(l.ruleList, func(r RuleInfo) bool { return r.Namespace == id })
	l.publishRulesLocked()
	return nil
}

// SetDefaultNamespace sets the default namespace's interface and FIBs. It
// fails with ErrNamespaceInUse while apps are attached to it.
func (l *Layer) SetDefaultNamespace(c NamespaceConfig) error {
	l.lock()
	defer l.unlock()
	ns := l.nss[""]
	if ns.apps > 0 {
		return fmt.Errorf("default namespace: %d apps: %w", ns.apps, ErrNamespaceInUse)
	}
	c.ID = ""
	ns.cfg = c
	l.publishRulesLocked() // global rule tables follow the namespace's FIBs
	return nil
}

// validateNamespace finds the namespace an app attaches to (seed:
// session_validate_namespace): "" is the default one and needs no secret;
// any other must exist and its secret must match.
func (l *Layer) validateNamespaceLocked(id string, secret uint64) (*namespace, error) {
	ns, ok := l.nss[id]
	if id == "" {
		return ns, nil
	}
	if !ok {
		return nil, fmt.Errorf("namespace %q: %w", id, ErrInvalidNamespace)
	}
	var a, b [8]byte
	binary.BigEndian.PutUint64(a[:], ns.cfg.Secret)
	binary.BigEndian.PutUint64(b[:], secret)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return nil, fmt.Errorf("namespace %q: %w", id, ErrWrongSecret)
	}
	return ns, nil
}
