package sessions

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"
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

// MaxNamespaceIDLen is the longest namespace id, in bytes: the bound the
// control protocol puts on every name it carries (api.MaxNameLen).
const MaxNamespaceIDLen = 64

// namespaceIDForm says what ValidNamespaceID accepts.
const namespaceIDForm = "an id is 1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"

// ValidNamespaceID checks the form of the id of a namespace being added:
// 1 to MaxNamespaceIDLen bytes of ASCII letters, digits, '.', '_' and '-',
// the first a letter or digit. Ids are a column of ctl show's tables, a
// word of the CLI and the config file, a value of metrics labels and a
// field of log lines: no space, control character, slash or other byte
// that would split, escape or reshape them is among them, and neither is
// "." or "..", nor a leading '-' that reads as a flag. The error wraps
// ErrInvalidValue and says what is allowed. The default namespace's id,
// "", is not one a namespace is added with.
func ValidNamespaceID(id string) error {
	if id == "" {
		return fmt.Errorf("namespace id is empty: %s: %w", namespaceIDForm, ErrInvalidValue)
	}
	if len(id) > MaxNamespaceIDLen {
		return fmt.Errorf("namespace id %q… is %d bytes long: %s: %w", id[:16], len(id), namespaceIDForm, ErrInvalidValue)
	}
	for i, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			continue
		case i > 0 && (c == '.' || c == '_' || c == '-'):
			continue
		}
		what := fmt.Sprintf("%q", c)
		if c == utf8.RuneError {
			what = fmt.Sprintf("byte %#x", id[i])
		}
		return fmt.Errorf("namespace id %q: %s at offset %d is not allowed: %s: %w", id, what, i, namespaceIDForm, ErrInvalidValue)
	}
	return nil
}

// AddNamespace adds an app namespace. The default namespace ("") always
// exists; see SetDefaultNamespace. Its id must pass ValidNamespaceID.
func (l *Layer) AddNamespace(c NamespaceConfig) error {
	l.lock()
	defer l.unlock()
	if _, ok := l.nss[c.ID]; ok {
		return fmt.Errorf("namespace %q: %w", c.ID, ErrNamespaceExists)
	}
	if err := ValidNamespaceID(c.ID); err != nil {
		return err
	}
	l.nss[c.ID] = &namespace{cfg: c, local: map[listenKey]*Listener{}}
	return nil
}

// DelNamespace removes an app namespace with no apps attached, and its
// rules; a Datapath that is a NamespaceForgetter forgets it too.
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
	if f, ok := l.cfg.Datapath.(NamespaceForgetter); ok {
		f.NamespaceDeleted(id)
	}
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
