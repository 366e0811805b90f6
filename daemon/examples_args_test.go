package daemon

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamplesCheckTheirArguments: each example's --help says what it
// does and lists the flags the README names; a --listen URI of the wrong
// transport or with no scheme, or an argument that is not a flag, makes
// it exit 1 before it attaches, saying what to give instead (an httpd
// given udp:// served HTTP on a UDP listener; udpsink ignored arguments).
func TestExamplesCheckTheirArguments(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t)
	for _, c := range []struct{ name, scheme, def string }{
		{"httpd", "tcp", "tcp://0.0.0.0:8080"},
		{"tcpecho", "tcp", "tcp://0.0.0.0:7000"},
		{"udpecho", "udp", "udp://0.0.0.0:9000"},
		{"udpsink", "udp", "udp://0.0.0.0:9001"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin := buildExample(t, dir, c.name)
			run := func(args ...string) (string, int) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
				if ctx.Err() != nil {
					return string(out), -1
				}
				if ee, ok := err.(*exec.ExitError); ok {
					return string(out), ee.ExitCode()
				}
				return string(out), 0
			}
			help, st := run("--help")
			if st != 0 || !strings.HasPrefix(help, "Usage: "+c.name+" [flags]\n\n"+c.name+" ") {
				t.Errorf("%s --help: exit %d, %q, want exit 0 and a usage line, then what it does", c.name, st, help)
			}
			for _, f := range []string{"-socket", "-ns", "-secret", "-name", "-listen"} {
				if !strings.Contains(help, "  "+f+" ") {
					t.Errorf("%s --help does not list %s:\n%s", c.name, f, help)
				}
			}
			other := map[string]string{"tcp": "udp", "udp": "tcp"}[c.scheme]
			for _, bad := range []string{other + "://127.0.0.1:19480", "127.0.0.1:19480", "bogus"} {
				want := c.name + `: --listen "` + bad + `": want ` + c.scheme + "://ADDR:PORT, e.g. " + c.def + "\n"
				out, st := run("--socket", d.Socket(), "--listen", bad)
				if st != 1 || out != want {
					t.Errorf("%s --listen %s: exit %d (-1: still running after 5 s), %q, want exit 1, %q", c.name, bad, st, out, want)
				}
				// The URI is checked before the attach, which would fail.
				out, st = run("--socket", filepath.Join(dir, "nobody.sock"), "--listen", bad)
				if st != 1 || out != want {
					t.Errorf("%s --listen %s with no daemon: exit %d, %q, want exit 1, %q", c.name, bad, st, out, want)
				}
			}
			want := c.name + `: unexpected arguments ["extra"]: every setting is a flag (--help lists them)` + "\n"
			if out, st := run("--socket", d.Socket(), "extra"); st != 1 || out != want {
				t.Errorf("%s extra: exit %d, %q, want exit 1, %q", c.name, st, out, want)
			}
		})
	}
}
