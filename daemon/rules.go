package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// NamespaceConfig is an app namespace of the config file (the YAML keys
// are those of deploy/xsessiond.yaml).
type NamespaceConfig struct {
	ID     string `yaml:"id"`
	Secret uint64 `yaml:"secret"`
	Iface  string `yaml:"iface"`
	Netns  string `yaml:"netns"`
	// AllowUIDs and AllowGIDs, when either is set, are the users that may
	// attach to the namespace (uid 0 always may): a peer whose uid, or
	// primary or supplementary gid, is listed.
	AllowUIDs []uint32 `yaml:"allow_uids"`
	AllowGIDs []uint32 `yaml:"allow_gids"`
}

// access is the namespace's allow-list (empty: anyone with the secret).
func (n NamespaceConfig) access() sessions.AccessList {
	return sessions.AccessList{UIDs: n.AllowUIDs, GIDs: n.AllowGIDs}
}

// RuleConfig is a session rule of the config file, as `xsessiond ctl rule
// add` takes it.
type RuleConfig struct {
	Proto      string `yaml:"proto"`       // udp or tcp
	Local      string `yaml:"local"`       // prefix, e.g. 0.0.0.0/0
	LocalPort  uint16 `yaml:"local_port"`  // 0 = any
	Remote     string `yaml:"remote"`      // prefix
	RemotePort uint16 `yaml:"remote_port"` // 0 = any
	Action     string `yaml:"action"`      // drop, allow, or forward
	App        string `yaml:"app"`         // the app name to forward to (action forward)
	Scope      string `yaml:"scope"`       // global, local or both
	Tag        string `yaml:"tag"`
	Namespace  string `yaml:"namespace"` // the namespace whose local table holds a local rule
}

// Validate checks every field of the rule and names the first bad one.
func (r RuleConfig) Validate() error {
	switch r.Proto {
	case "udp", "tcp":
	default:
		return fmt.Errorf("proto %q: want udp or tcp", r.Proto)
	}
	var fams []bool // Is4 of each prefix given
	for _, p := range []struct{ name, v string }{{"local", r.Local}, {"remote", r.Remote}} {
		if p.v == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(p.v)
		if err != nil {
			return fmt.Errorf("%s %q: want a prefix like 10.0.0.0/8 (an address, a slash and a length of at most 32, 128 for IPv6)", p.name, p.v)
		}
		fams = append(fams, pfx.Addr().Unmap().Is4())
	}
	if len(fams) == 2 && fams[0] != fams[1] {
		return fmt.Errorf("local %q and remote %q are of different families: no packet matches both; give two rules, one per family", r.Local, r.Remote)
	}
	switch r.Action {
	case "drop", "allow":
		if r.App != "" {
			return fmt.Errorf("app %q goes with action forward only: a rule that %ss hands nothing to an app", r.App, r.Action)
		}
	case "forward":
		if r.App == "" {
			return errors.New("action forward needs app")
		}
	case "":
		return errors.New("action is missing: want drop, allow or forward")
	default:
		return fmt.Errorf("action %q: want drop, allow or forward", r.Action)
	}
	switch r.Scope {
	case "", "global", "local", "both":
	default:
		return fmt.Errorf("scope %q: want global, local or both", r.Scope)
	}
	return nil
}

// ParseScope reads global, local or both.
func ParseScope(s string) (flow.Scope, error) {
	switch s {
	case "", "global":
		return flow.ScopeGlobal, nil
	case "local":
		return flow.ScopeLocal, nil
	case "both":
		return flow.ScopeGlobal | flow.ScopeLocal, nil
	}
	return 0, fmt.Errorf("scope %q: want global, local or both: %w", s, flow.ErrInvalidValue)
}

// ParseTransport reads udp or tcp.
func ParseTransport(s string) (flow.Transport, error) {
	switch s {
	case "udp":
		return flow.TransportUDP, nil
	case "tcp":
		return flow.TransportTCP, nil
	}
	return 0, fmt.Errorf("proto %q: want udp or tcp: %w", s, flow.ErrInvalidValue)
}

// ParseAction reads drop, allow or forward.
func ParseAction(s string) (api.RuleAction, error) {
	switch s {
	case "drop":
		return api.ActionDrop, nil
	case "allow":
		return api.ActionAllow, nil
	case "forward":
		return api.ActionForward, nil
	}
	return 0, fmt.Errorf("action %q: want drop, allow or forward: %w", s, flow.ErrInvalidValue)
}

// ParsePrefix reads a prefix like 10.0.0.0/8, masked; "" is the invalid
// prefix, which matches any address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix %q: %w", s, flow.ErrInvalidValue)
	}
	return p.Masked(), nil
}

// apiRule turns a configured rule into the control protocol's form;
// appIndex resolves the app a forward rule names.
func (rc RuleConfig) apiRule(appIndex func(name string) (uint32, bool)) (api.Rule, error) {
	var r api.Rule
	var err error
	if r.Transport, err = ParseTransport(rc.Proto); err != nil {
		return r, err
	}
	if r.Local, err = ParsePrefix(rc.Local); err != nil {
		return r, err
	}
	if r.Remote, err = ParsePrefix(rc.Remote); err != nil {
		return r, err
	}
	if r.Action, err = ParseAction(rc.Action); err != nil {
		return r, err
	}
	if r.Scope, err = ParseScope(rc.Scope); err != nil {
		return r, err
	}
	r.LocalPort, r.RemotePort, r.Tag, r.Namespace = rc.LocalPort, rc.RemotePort, rc.Tag, rc.Namespace
	if r.Action == api.ActionForward {
		idx, ok := appIndex(rc.App)
		if !ok {
			return r, fmt.Errorf("forward to app %q: %w", rc.App, flow.ErrNotAttached)
		}
		r.AppIndex = idx
	}
	return r, nil
}
