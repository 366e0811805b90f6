package ctlview

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
)

// hostileNames are names the daemon takes (any UTF-8 of up to 64 bytes for
// an app's name or a rule's tag) that would break a table printed as is.
var hostileNames = []string{"a\tb", "two\nlines", "\x1b[2Jclear", " lead", "nbsp\u00a0x"}

// checkRows says when a table has another number of lines than rows+1
// (the header), a raw control character, or a row whose fields are not
// the header's count.
func checkRows(t *testing.T, out string, rows, fields int) {
	t.Helper()
	if strings.ContainsAny(out, "\t\x1b") {
		t.Errorf("a control character reached the table:\n%q", out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != rows+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), rows+1, out)
	}
	for _, l := range lines[1:] {
		if n := len(strings.Fields(l)); n != fields {
			t.Errorf("row %q: %d fields, want %d", l, n, fields)
		}
	}
}

// TestWriteTableHostileNames: an app's name or a rule's tag holding a tab,
// a newline or an escape sequence is printed quoted, one row per app or
// rule and every column where it belongs; a plain unicode name is left as
// it is.
func TestWriteTableHostileNames(t *testing.T) {
	var apps []daemon.AppView
	var rules []daemon.RuleView
	for i, n := range hostileNames {
		apps = append(apps, daemon.AppView{ID: uint32(i + 1), Name: strings.ReplaceAll(n, " ", ""), Namespace: "default", Scope: "global"})
		rules = append(rules, daemon.RuleView{ID: uint32(i + 1), Namespace: "default", Proto: "udp", Local: "any", Remote: "any",
			Action: "drop", Scope: "global", Tag: strings.ReplaceAll(n, " ", "")})
	}
	checkRows(t, table(t, api.ShowApps, apps), len(apps), 11)
	checkRows(t, table(t, api.ShowRules, rules), len(rules), 12)

	out := table(t, api.ShowApps, []daemon.AppView{{ID: 1, Name: "écho", Namespace: "default", Scope: "global"}})
	if !strings.Contains(out, " écho ") {
		t.Errorf("a unicode name is not printed as it is:\n%s", out)
	}
	// A tag with a space at an end would read as no tag, or as two.
	out = table(t, api.ShowRules, []daemon.RuleView{{ID: 1, Namespace: "default", Proto: "udp", Local: "any", Remote: "any",
		Action: "drop", Scope: "global", Tag: " "}})
	if !strings.Contains(out, `" "`) {
		t.Errorf("a blank tag is not quoted:\n%s", out)
	}
}

// TestDrawTopHostileNames: the same names in top's app table.
func TestDrawTopHostileNames(t *testing.T) {
	at := time.Unix(1000, 0)
	prev := &topSample{at: at}
	cur := &topSample{at: at.Add(time.Second)}
	for i, n := range hostileNames {
		cur.apps = append(cur.apps, daemon.AppView{ID: uint32(i + 1), Name: strings.ReplaceAll(n, " ", ""), Namespace: "default"})
	}
	frame := string(drawTop(prev, cur, 10, 0, 0))
	if strings.ContainsAny(frame, "\t\x1b") {
		t.Fatalf("a control character reached the frame:\n%q", frame)
	}
	var n int
	for _, l := range strings.Split(frame, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] != "APP" && f[len(f)-1] == "0" && strings.HasSuffix(f[len(f)-3], "%") {
			n++
			if len(f) != 8 {
				t.Errorf("app row %q: %d fields, want 8", l, len(f))
			}
		}
	}
	if n != len(hostileNames) {
		t.Fatalf("%d app rows, want %d:\n%s", n, len(hostileNames), frame)
	}
}

// TestClipUnicode: clipping to a terminal's width cuts between
// characters, never inside one, and counts a character as one column.
func TestClipUnicode(t *testing.T) {
	got := string(clip([]byte("éééé\nabcdef\n"), 3, 0))
	if !utf8.ValidString(got) {
		t.Fatalf("clip cut inside a character: %q", got)
	}
	if want := "ééé\nabc"; got != want {
		t.Fatalf("clip: %q, want %q", got, want)
	}
}
