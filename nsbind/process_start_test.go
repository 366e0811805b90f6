package nsbind

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcessStartOfAZombie: a process that has ended but is not reaped
// yet (a daemon killed a moment ago) counts as gone, so that its veth
// peer note is taken over; a running one gives its start time.
func TestProcessStartOfAZombie(t *testing.T) {
	if processStart(os.Getpid()) == "" {
		t.Fatal("this process has no start time")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skipf("no true(1): %v", err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err == nil && strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("child %d did not become a zombie: %q, %v", pid, b, err)
		}
	}
	if s := processStart(pid); s != "" {
		t.Errorf("a zombie's start time %q, want none (ended)", s)
	}
}
