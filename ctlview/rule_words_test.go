package ctlview

import (
	"strings"
	"testing"
)

// TestParseRuleTwoApps checks that a rule naming two apps to forward to,
// action N (VPP's forward app N) beside app M, is refused rather than
// forwarding to the one given last; the same app twice is one.
func TestParseRuleTwoApps(t *testing.T) {
	for _, words := range []string{
		"proto udp action 3 app 4",
		"proto udp app 4 action 3",
	} {
		r, err := ParseRule(strings.Fields(words), true)
		if err == nil || !strings.Contains(err.Error(), "two apps to forward to") {
			t.Errorf("%s: %v (rule %+v), want two apps named", words, err, r)
		}
	}
	for _, words := range []string{"proto udp action 3 app 3", "proto udp app 3 action 3", "proto udp action forward app 3"} {
		r, err := ParseRule(strings.Fields(words), true)
		if err != nil || r.AppIndex != 3 {
			t.Errorf("%s: %v, app %d", words, err, r.AppIndex)
		}
	}
}

// TestParseRuleVPPOrderThenWord checks that local or remote given as
// words after VPP's order (the four words after proto) is refused rather
// than replacing what those words gave.
func TestParseRuleVPPOrderThenWord(t *testing.T) {
	for _, words := range []string{
		"proto udp 0.0.0.0/0 1 0.0.0.0/0 2 local 10.0.0.0/8 3 action drop",
		"proto udp 0.0.0.0/0 1 0.0.0.0/0 2 action drop remote 10.0.0.0/8 3",
	} {
		r, err := ParseRule(strings.Fields(words), true)
		if err == nil || !strings.Contains(err.Error(), "given twice") || !strings.Contains(err.Error(), "four words after proto") {
			t.Errorf("%s: %v (rule %+v), want local or remote named as given twice", words, err, r)
		}
	}
	if r, err := ParseRule(strings.Fields("proto udp 0.0.0.0/0 1 10.0.0.0/8 2 action drop"), true); err != nil || r.LocalPort != 1 || r.RemotePort != 2 {
		t.Errorf("VPP order alone: %v, rule %+v", err, r)
	}
}
