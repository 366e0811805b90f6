package vagrant

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// need finds a tool, skipping the test without it, or failing when
// XSESSIOND_PRIVILEGED=require (CI installs the tools).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	if os.Getenv(nstest.PrivilegedEnv) == "require" {
		t.Fatalf("%s is not installed and %s=require: install it (apt-get install %s)", tool, nstest.PrivilegedEnv, tool)
	}
	t.Skipf("%s is not installed", tool)
	return ""
}

func TestShellcheckProvision(t *testing.T) {
	sc := need(t, "shellcheck")
	out, err := exec.Command(sc, "-x", "provision.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck provision.sh: %v\n%s", err, out)
	}
}

// TestProvisionCheck runs the only mode that is meant to run on any
// machine: it verifies tools and versions and changes nothing.
func TestProvisionCheck(t *testing.T) {
	bash := need(t, "bash")
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, "provision.sh", "--check", "--src", src)
	out, err := cmd.CombinedOutput()
	t.Logf("provision.sh --check:\n%s", out)
	for _, want := range []string{"go: ", "clang: ", "llvm-strip: ", "libbpf headers: ", "project: ok"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--check output lacks %q", want)
		}
	}
	if err != nil {
		// The build tools the project needs are missing here: that is
		// what --check is for, so it must say which.
		if !strings.Contains(string(out), "MISSING") {
			t.Fatalf("--check failed (%v) without naming what is missing", err)
		}
		if os.Getenv(nstest.PrivilegedEnv) == "require" {
			t.Fatalf("build tools missing on a CI machine: %v", err)
		}
	}
}

// TestProvisionDryRun walks the whole provisioning in --dry-run mode: every
// step is printed, nothing is executed.
func TestProvisionDryRun(t *testing.T) {
	bash := need(t, "bash")
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, "provision.sh", "--dry-run", "--role", "gen", "--src", src, "--ip", "127.0.0.1", "--queues", "4")
	cmd.Env = append(os.Environ(), "GO_VERSION=99.0.0") // forces the tarball step
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--dry-run: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"+ apt-get install -y -qq clang llvm libbpf-dev",
		"+ curl -fsSL -o /tmp/go99.0.0.tar.gz https://go.dev/dl/go99.0.0.linux-",
		"+ tar -C /usr/local -xzf /tmp/go99.0.0.tar.gz",
		"go build ./...",
		"combined 4",
		"gen: ",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("dry run lacks %q\n%s", want, s)
		}
	}
	if _, err := os.Stat("/tmp/go99.0.0.tar.gz"); err == nil {
		t.Error("dry run downloaded something")
	}
}

func TestProvisionRejectsBadArguments(t *testing.T) {
	bash := need(t, "bash")
	for _, args := range [][]string{{"--role", "router"}, {"--queues", "0"}, {"--bogus"}} {
		cmd := exec.Command(bash, append([]string{"provision.sh", "--dry-run"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%v accepted:\n%s", args, out)
		}
	}
}

// TestVagrantfileSyntax parses the Vagrantfile with ruby -c (CI installs
// ruby).
func TestVagrantfileSyntax(t *testing.T) {
	ruby := need(t, "ruby")
	out, err := exec.Command(ruby, "-c", "Vagrantfile").CombinedOutput()
	if err != nil {
		t.Fatalf("ruby -c Vagrantfile: %v\n%s", err, out)
	}
}
