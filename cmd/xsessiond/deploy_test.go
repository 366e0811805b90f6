package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

const unitFile = "../../deploy/xsessiond.service"

// unitSettings reads the [Service] settings of the shipped unit.
func unitSettings(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}

// capList turns "CAP_NET_ADMIN CAP_BPF" into setpriv's "-all,+net_admin,+bpf".
func capList(s string) string {
	out := "-all"
	for _, c := range strings.Fields(s) {
		out += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return out
}

// TestUnitVerifies runs systemd-analyze verify on the shipped unit, its
// ExecStart pointed at the built binary.
func TestUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("XSESSIOND_PRIVILEGED") == "require" {
			t.Fatal("systemd-analyze is missing: apt-get install -y systemd")
		}
		t.Skip("systemd-analyze is missing")
	}
	xs, _ := binaries(t)
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "xsessiond.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/xsessiond", xs)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if s := unitSettings(t)["ReadWritePaths"]; strings.Contains(" "+s+" ", " /run/netns ") {
		t.Errorf("ReadWritePaths has /run/netns without \"-\": the unit fails on hosts with no named netns")
	}
}

// TestUnitCapabilities starts the daemon binary with exactly the unit's
// capability set (bounding, inheritable and ambient, no new privileges,
// as the unit's user root) through setpriv, with a socket group, and
// checks that it serves an echo app; and that one capability less
// (CAP_CHOWN) fails the start with the reason.
func TestUnitCapabilities(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is missing")
	}
	u := unitSettings(t)
	if u["User"] != "root" {
		t.Fatalf("the unit runs as %q: this test starts root with the unit's capabilities", u["User"])
	}
	bounding, ambient := capList(u["CapabilityBoundingSet"]), capList(u["AmbientCapabilities"])
	setpriv := func(bounding, ambient string) []string {
		args := []string{"--bounding-set", bounding, "--inh-caps", ambient, "--ambient-caps", ambient}
		if u["NoNewPrivileges"] == "yes" {
			args = append(args, "--no-new-privs")
		}
		return append(args, "--")
	}
	xs, echo := binaries(t)
	// The socket in a folder made as the unit's RuntimeDirectory is, root's
	// with RuntimeDirectoryMode.
	mode, err := strconv.ParseUint(u["RuntimeDirectoryMode"], 8, 32)
	if err != nil {
		t.Fatalf("RuntimeDirectoryMode %q: %v", u["RuntimeDirectoryMode"], err)
	}
	runDir := filepath.Join(nobodyDir(t, "xsessiond-unit-"), u["RuntimeDirectory"])
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(runDir, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(runDir, "api.sock")
	run := []string{"run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock}
	cfg := filepath.Join(t.TempDir(), "xsessiond.yaml")
	if err := os.WriteFile(cfg, []byte("socket_group: nogroup\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run = append(run, "--config", cfg)

	// One capability less: the chown of the socket fails, and says so.
	less := strings.Replace(bounding, ",+chown", "", 1)
	if less == bounding {
		t.Fatalf("the unit's capabilities %q lack CAP_CHOWN, which socket_group needs", u["CapabilityBoundingSet"])
	}
	line := oneLine(t, "setpriv", append(setpriv(less, strings.Replace(ambient, ",+chown", "", 1)), append([]string{xs}, append(run, "--log-level", "error")...)...)...)
	t.Logf("without CAP_CHOWN: %s", line)
	if !strings.Contains(line, "chown") || !strings.Contains(line, "operation not permitted") {
		t.Errorf("start without CAP_CHOWN: %q", line)
	}

	d := startProcess(t, "setpriv", append(setpriv(bounding, ambient), append([]string{xs}, run...)...)...)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Gid != 65534 {
		t.Errorf("socket group %d, want nogroup (65534)", st.Gid)
	}
	// A member of the socket's group reaches the socket through the
	// runtime folder.
	if err := os.Chmod(filepath.Dir(xs), 0o755); err != nil {
		t.Fatal(err)
	}
	member := exec.Command(xs, "ctl", "--socket", sock, "show", "apps")
	member.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534}}}
	if out, err := member.CombinedOutput(); err != nil {
		t.Errorf("ctl show apps as a member of socket_group, the socket in a RuntimeDirectoryMode=%s folder: %v\n%s", u["RuntimeDirectoryMode"], err, out)
	}
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatal(err)
	}
	e.stop(t)
	// A root app's port below 1024: the daemon reserves it in the
	// kernel with a socket of its own, which takes CAP_NET_BIND_SERVICE
	// (the namespace's ip_unprivileged_port_start is the default, 1024).
	e = startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:53")
	e.waitLine(t, "echoing on", 10*time.Second)
	if err := echoOnce(t, rig, 53); err != nil {
		t.Fatal(err)
	}
	e.stop(t)
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond under the unit's capabilities exited %d", code)
	}
}

// TestMissingSocketGroup: a socket_group that does not exist fails the
// start with one line that says what to do.
func TestMissingSocketGroup(t *testing.T) {
	xs, _ := binaries(t)
	cfg := filepath.Join(t.TempDir(), "xsessiond.yaml")
	if err := os.WriteFile(cfg, []byte("socket_group: no-such-group-xs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	line := oneLine(t, xs, "run", "--iface", "lo", "--config", cfg, "--socket", filepath.Join(t.TempDir(), "a.sock"))
	if !strings.Contains(line, `socket_group "no-such-group-xs": no such group: create it (groupadd --system no-such-group-xs)`) {
		t.Errorf("missing group: %q", line)
	}
}
