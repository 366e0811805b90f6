package attach

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

// TestLongNamesNameTheirFlag: an --ns or --name longer than the daemon
// takes fails before the attach, with an error naming the flag (the
// control protocol's words were "hello name is 65 bytes, limit 64").
func TestLongNamesNameTheirFlag(t *testing.T) {
	long := strings.Repeat("a", 65)
	for _, c := range []struct{ flag, want string }{
		{"--ns", `--ns "` + long + `": 65 bytes, the daemon takes at most 64`},
		{"--name", `--name "` + long + `": 65 bytes, the daemon takes at most 64`},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		f := Register(fs, "x", "x")
		// No daemon there: a check made before the attach says so first.
		sock := filepath.Join(t.TempDir(), "nobody.sock")
		if err := fs.Parse([]string{"--socket", sock, c.flag, long}); err != nil {
			t.Fatal(err)
		}
		a, _, stop, err := f.Attach()
		if err == nil {
			stop()
			t.Fatalf("%s of 65 bytes: attached as app %d", c.flag, a.Index())
		}
		if err.Error() != c.want {
			t.Errorf("%s of 65 bytes: %q, want %q", c.flag, err, c.want)
		}
	}
	// 64 bytes pass the check: the attach itself fails, there being no
	// daemon.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Register(fs, "x", "x")
	fs.Parse([]string{"--socket", filepath.Join(t.TempDir(), "nobody.sock"), "--name", long[:64], "--ns", long[:64]})
	if _, _, _, err := f.Attach(); err == nil || strings.Contains(err.Error(), "at most") {
		t.Errorf("--name and --ns of 64 bytes: %v, want the attach's error", err)
	}
}
