package ctlview

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
)

// RuleHelp tells how a rule is written as words (ctl rule --help).
const RuleHelp = `A rule is given as words, as VPP's "session rule add" takes them:

  proto udp|tcp            the transport (required; UDP and TCP too)
  local PREFIX [PORT]      this host's side: a prefix like 0.0.0.0/0 and a port (0: any)
  remote PREFIX [PORT]     the peer's side
  action drop|allow|forward|N
                           N, an app index, is "forward app N"
  app N                    the app index a forward rule hands matches to (see ctl show apps)
  scope global|local|both  which tables hold the rule (default global)
  ns ID | appns ID         the app namespace (default: the default namespace)
  tag T                    a name for the rule; "rule del tag T" deletes by tag

VPP's own order works too: right after the protocol, the local prefix and
port and the remote prefix and port, without the words local and remote:

  proto UDP LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT action ... [scope S] [appns ID] [tag T]

Global rules act on connects of global-scope apps and on the wire: a
datagram for a bound port that a drop rule matches is dropped, one a
forward rule matches goes to that app's listener of the port (an app of the
rule's namespace; of the connects, those of its namespace's apps alone),
allow lets the normal lookup run. Local rules act on
connects of local-scope apps only. "ctl show rules" lists each rule's id
and hits; "rule del ID" deletes by id.

Examples:

  xsessiond ctl rule add proto udp local 0.0.0.0/0 9000 remote 10.0.0.0/8 0 action drop scope global tag T
  xsessiond ctl rule add proto UDP 0.0.0.0/0 9000 10.0.0.0/8 0 action drop scope global appns blue tag t1
  xsessiond ctl rule del 3`

// ruleKeywords are the words ParseRule knows.
var ruleKeywords = map[string]bool{"proto": true, "local": true, "remote": true, "action": true,
	"app": true, "appns": true, "ns": true, "scope": true, "tag": true}

// ParseRule reads the words of `rule add` (forAdd) or `rule del`.
func ParseRule(words []string, forAdd bool) (api.Rule, error) {
	var r api.Rule
	r.Scope = flow.ScopeGlobal
	var haveProto, haveAction bool
	next := func(i *int, what string) (string, error) {
		if *i+1 >= len(words) {
			return "", fmt.Errorf("%q needs %s", words[*i], what)
		}
		*i++
		return words[*i], nil
	}
	// port takes the word after a prefix when it is a number: a port, or
	// a number out of a port's range, refused; a keyword is the next one,
	// and any other word a port mistyped.
	port := func(i *int, side string) (uint16, error) {
		if *i+1 >= len(words) {
			return 0, nil
		}
		v := words[*i+1]
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			if !ruleKeywords[v] {
				return 0, fmt.Errorf("%s port %q: want 0 to 65535 (0: any), or the rule's next word (see xsessiond ctl rule --help)", side, v)
			}
			return 0, nil // not a port: the next keyword
		}
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%s port %s: want 0 to 65535 (0: any)", side, v)
		}
		*i++
		return uint16(p), nil
	}
	seen := map[string]bool{}
	vppOrder := false // proto P LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT
	for i := 0; i < len(words); i++ {
		w := words[i]
		// A word given twice would overwrite the first silently: proto
		// udp … proto tcp added a TCP rule.
		key := w
		if key == "appns" {
			key = "ns"
		}
		switch key {
		case "proto", "local", "remote", "action", "app", "ns", "scope", "tag":
			if seen[key] && vppOrder && (key == "local" || key == "remote") {
				return r, fmt.Errorf("%q given twice: the four words after proto gave the local and remote prefixes and ports already (see xsessiond ctl rule --help)", w)
			}
			if seen[key] {
				return r, fmt.Errorf("%q given twice: one of each (see xsessiond ctl rule --help)", w)
			}
			seen[key] = true
		}
		switch w {
		case "proto":
			v, err := next(&i, "udp or tcp")
			if err != nil {
				return r, err
			}
			if r.Transport, err = daemon.ParseTransport(strings.ToLower(v)); err != nil {
				return r, fmt.Errorf("proto %q: want udp or tcp", v)
			}
			haveProto = true
			// VPP's order: LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT.
			if i+1 < len(words) && strings.Contains(words[i+1], "/") {
				if i+4 >= len(words) {
					return r, fmt.Errorf("proto %s LCL_PREFIX LCL_PORT RMT_PREFIX RMT_PORT: %d of the 4 words given", v, len(words)-i-1)
				}
				// They are the rule's local and remote: either word given
				// after them would replace them unseen.
				vppOrder, seen["local"], seen["remote"] = true, true, true
				for _, side := range []struct {
					name string
					p    *netip.Prefix
					port *uint16
				}{{"local", &r.Local, &r.LocalPort}, {"remote", &r.Remote, &r.RemotePort}} {
					pv, portv := words[i+1], words[i+2]
					if *side.p, err = daemon.ParsePrefix(pv); err != nil {
						return r, fmt.Errorf("%s prefix %q: want a prefix like 10.0.0.0/8", side.name, pv)
					}
					pt, err := strconv.ParseUint(portv, 10, 16)
					if err != nil {
						return r, fmt.Errorf("%s port %q: want 0 to 65535 (0: any)", side.name, portv)
					}
					*side.port = uint16(pt)
					i += 2
				}
			}
		case "local", "remote":
			v, err := next(&i, "a prefix like 10.0.0.0/8")
			if err != nil {
				return r, err
			}
			p, err := daemon.ParsePrefix(v)
			if err != nil {
				return r, fmt.Errorf("%s %q: want a prefix like 10.0.0.0/8", w, v)
			}
			pt, err := port(&i, w)
			if err != nil {
				return r, err
			}
			if w == "local" {
				r.Local, r.LocalPort = p, pt
			} else {
				r.Remote, r.RemotePort = p, pt
			}
		case "action":
			v, err := next(&i, "drop, allow or forward")
			if err != nil {
				return r, err
			}
			if n, nerr := strconv.ParseUint(v, 10, 32); nerr == nil && n > 0 {
				if r.AppIndex != 0 && uint32(n) != r.AppIndex {
					return r, fmt.Errorf("app %d and action %d: two apps to forward to; give one (action forward app N, or action N)", r.AppIndex, n)
				}
				r.Action, r.AppIndex = api.ActionForward, uint32(n) // VPP: the action is the app index
			} else if r.Action, err = daemon.ParseAction(v); err != nil {
				return r, fmt.Errorf("action %q: want drop, allow, forward or an app index", v)
			}
			haveAction = true
		case "app", "appns", "ns", "scope", "tag":
			v, err := next(&i, "a value")
			if err != nil {
				return r, err
			}
			switch w {
			case "app":
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return r, fmt.Errorf("app %q: want an app index (see ctl show apps)", v)
				}
				// action N is forward app N: another app given beside it
				// would take its place unseen.
				if r.AppIndex != 0 && uint32(n) != r.AppIndex {
					return r, fmt.Errorf("action %d and app %d: two apps to forward to; give one (action forward app N, or action N)", r.AppIndex, n)
				}
				r.AppIndex = uint32(n)
			case "ns", "appns":
				if err := ValueFits(w, v, api.MaxNameLen, "a namespace id", "ctl show namespaces lists them"); err != nil {
					return r, err
				}
				r.Namespace = v
			case "scope":
				if r.Scope, err = daemon.ParseScope(v); err != nil {
					return r, fmt.Errorf("scope %q: want global, local or both", v)
				}
			case "tag":
				if err := ValueFits(w, v, api.MaxNameLen, "a tag", "give a shorter one"); err != nil {
					return r, err
				}
				r.Tag = v
			}
		default:
			return r, fmt.Errorf("unknown word %q (see xsessiond ctl rule --help)", w)
		}
	}
	if !forAdd && r.Tag != "" {
		return r, nil
	}
	if !haveProto {
		return r, errors.New("the rule needs proto udp|tcp")
	}
	if forAdd && !haveAction {
		return r, errors.New("the rule needs action drop|allow|forward")
	}
	if forAdd && r.Action == api.ActionForward && r.AppIndex == 0 {
		return r, errors.New("action forward needs app N")
	}
	if forAdd && r.Action != api.ActionForward && r.AppIndex != 0 {
		return r, errors.New("app N goes with action forward only")
	}
	if !forAdd && r.Action == 0 {
		r.Action = api.ActionDrop // ignored by the match; keeps the rule valid
	}
	return r, nil
}

// ValueFits says when the value v of a flag or a rule's word (name) is
// longer than max bytes, what the control protocol carries of it (what:
// "a tag"), or is not UTF-8; hint says where the right values are listed
// or what to do.
func ValueFits(name, v string, max int, what, hint string) error {
	shown := v
	if len(shown) > 24 {
		shown = strings.ToValidUTF8(shown[:24], "") + "…"
	}
	switch {
	case len(v) > max:
		return fmt.Errorf("%s %q: %d bytes, and %s is at most %d (%s)", name, shown, len(v), what, max, hint)
	case !utf8.ValidString(v):
		return fmt.Errorf("%s %q: not valid UTF-8: give %s in UTF-8 (%s)", name, shown, what, hint)
	}
	return nil
}
