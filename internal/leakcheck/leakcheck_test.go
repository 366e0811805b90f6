package leakcheck_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"golang.org/x/sys/unix"
)

// These tests use the helper's own approach: set snapshots (descriptor
// number and target, goroutine id, path) compared after a bounded wait.

var short = leakcheck.Options{FDs: true, Goroutines: true, Timeout: 500 * time.Millisecond}

func TestCleanIsClean(t *testing.T) {
	s := leakcheck.Take(t, short)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan struct{})
	go func() { <-done }()
	close(done)
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestFDLeakNamed(t *testing.T) {
	s := leakcheck.Take(t, short)
	fd, err := unix.MemfdCreate("leakcheck-probe", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = s.Wait()
	if !errors.Is(err, leakcheck.ErrLeak) {
		t.Fatalf("a descriptor left open: %v", err)
	}
	want := "fd " + strconv.Itoa(fd) + " -> /memfd:leakcheck-probe"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("report does not name %q:\n%v", want, err)
	}
}

// TestFDReplacedIsNew closes a descriptor that was in the snapshot and
// opens another at the same number: the count is the same, the set is not.
func TestFDReplacedIsNew(t *testing.T) {
	old, err := unix.MemfdCreate("leakcheck-old", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	s := leakcheck.Take(t, short)
	unix.Close(old)
	fd, err := unix.MemfdCreate("leakcheck-new", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = s.Wait()
	if !errors.Is(err, leakcheck.ErrLeak) || !strings.Contains(err.Error(), "/memfd:leakcheck-new") {
		t.Fatalf("a replaced descriptor: %v", err)
	}
}

func TestFDTransientIgnored(t *testing.T) {
	s := leakcheck.Take(t, leakcheck.Options{FDs: true})
	fd, err := unix.MemfdCreate("leakcheck-transient", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		unix.Close(fd)
	}()
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestGoroutineLeakNamed(t *testing.T) {
	s := leakcheck.Take(t, short)
	block := make(chan struct{})
	defer close(block)
	go blockedForever(block)
	err := s.Wait()
	if !errors.Is(err, leakcheck.ErrLeak) || !strings.Contains(err.Error(), "leakcheck_test.blockedForever(") {
		t.Fatalf("a blocked goroutine: %v", err)
	}
	if strings.Contains(err.Error(), "TestGoroutineLeakNamed(") {
		t.Fatalf("the test's own goroutine reported:\n%v", err)
	}
}

func blockedForever(c chan struct{}) { <-c }

func TestGoroutineTransientIgnored(t *testing.T) {
	s := leakcheck.Take(t, leakcheck.Options{Goroutines: true})
	block := make(chan struct{})
	go blockedForever(block)
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(block)
	}()
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckFromAnotherGoroutine: the goroutine that checks is not itself
// reported.
func TestCheckFromAnotherGoroutine(t *testing.T) {
	s := leakcheck.Take(t, short)
	errc := make(chan error)
	go func() { errc <- s.Wait() }()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestDirAndPrefix(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "keep", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := leakcheck.Take(t, leakcheck.Options{Dirs: []leakcheck.Dir{{Path: root, Prefix: "keep"}}, Timeout: 300 * time.Millisecond})
	if err := os.WriteFile(filepath.Join(root, "other"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("an entry outside the prefix: %v", err)
	}
	pin := filepath.Join(root, "keep", "sub", "pin")
	if err := os.WriteFile(pin, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	if !errors.Is(err, leakcheck.ErrLeak) || !strings.Contains(err.Error(), "path "+pin) {
		t.Fatalf("a new entry under the prefix: %v", err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.Remove(pin)
	}()
	if err := s.Wait(); err != nil {
		t.Fatalf("an entry removed after 100ms: %v", err)
	}
	missing := leakcheck.Take(t, leakcheck.Options{Dirs: []leakcheck.Dir{{Path: filepath.Join(root, "none")}}})
	if err := missing.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckFails runs Check on a recording TB and sees it fail.
func TestCheckFails(t *testing.T) {
	s := leakcheck.Take(t, short)
	fd, err := unix.MemfdCreate("leakcheck-check", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r := &recorder{TB: t}
	if s.Check(r) || !strings.Contains(r.msg, "/memfd:leakcheck-check") {
		t.Fatalf("Check on a leak: %q", r.msg)
	}
}

type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Errorf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestMountNamed(t *testing.T) {
	nstest.RequirePrivileged(t)
	root := t.TempDir()
	s := leakcheck.Take(t, leakcheck.Options{Mounts: []string{root}, Timeout: 300 * time.Millisecond})
	if err := unix.Mount("leakcheck", root, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	unix.Unmount(root, 0)
	if !errors.Is(err, leakcheck.ErrLeak) || !strings.Contains(err.Error(), "mount "+root) {
		t.Fatalf("a mount left: %v", err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestDiffDoesNotWait: Diff reports what is there now, transient or not.
func TestDiffDoesNotWait(t *testing.T) {
	s := leakcheck.Take(t, leakcheck.Options{FDs: true})
	fd, err := unix.MemfdCreate("leakcheck-diff", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Diff()
	unix.Close(fd)
	if !errors.Is(err, leakcheck.ErrLeak) || !strings.Contains(err.Error(), "/memfd:leakcheck-diff") {
		t.Fatalf("Diff with a descriptor open: %v", err)
	}
	if err := s.Diff(); err != nil {
		t.Fatalf("Diff after it closed: %v", err)
	}
}
