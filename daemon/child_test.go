package daemon

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// A test runs an app in a process of its own, which it can kill, by
// re-executing the test binary with childAppEnv naming one of childApps:
// TestMain runs that app instead of the tests and exits with its result.
// It attaches to the daemon's socket childSockEnv gives; childArgEnv is
// its argument.
const (
	childAppEnv  = "XSESSIOND_TEST_CHILD_APP"
	childSockEnv = "XSESSIOND_TEST_CHILD_SOCKET"
	childArgEnv  = "XSESSIOND_TEST_CHILD_ARG"
)

var childApps = map[string]func(sock, arg string) int{
	"death": func(sock, _ string) int { return childApp(sock) },
	"tcp":   tcpChildApp,
	"mcast": mcastChildApp,
}

func TestMain(m *testing.M) {
	if name := os.Getenv(childAppEnv); name != "" {
		run := childApps[name]
		if run == nil {
			fmt.Fprintf(os.Stderr, "no child app %q\n", name)
			os.Exit(2)
		}
		os.Exit(run(os.Getenv(childSockEnv), os.Getenv(childArgEnv)))
	}
	os.Exit(m.Run())
}

// child is an app process of childApps.
type child struct {
	cmd *exec.Cmd
	out *bufio.Reader
}

// startChildApp starts child app name on the daemon socket sock with arg;
// the test's end kills it.
func startChildApp(t *testing.T, name, sock, arg string) *child {
	t.Helper()
	return startChildAppIn(t, nil, name, sock, arg)
}

// startChildAppIn is startChildApp with the child in host h's network
// namespace (ip netns exec); nil: this process's.
func startChildAppIn(t *testing.T, h *nstest.Host, name, sock, arg string) *child {
	t.Helper()
	argv := []string{os.Args[0], "-test.run=^$"}
	if h != nil {
		argv = append([]string{"ip", "netns", "exec", h.Name}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), childAppEnv+"="+name, childSockEnv+"="+sock, childArgEnv+"="+arg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &child{cmd: cmd, out: bufio.NewReader(out)}
}

// expect reads the child's next line, which must be word: it kills the
// child and fails the test otherwise.
func (c *child) expect(t *testing.T, word string) {
	t.Helper()
	line, err := c.out.ReadString('\n')
	if strings.TrimSpace(line) != word {
		c.cmd.Process.Kill()
		t.Fatalf("child: %q %v, want %q", line, err, word)
	}
}
