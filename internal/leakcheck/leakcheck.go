// Package leakcheck is the one leak check of the module's tests: it owns
// the snapshot of what a process holds (open file descriptors, goroutines,
// entries under chosen directories such as netns names or bpffs pins, and
// mount points) and the check that all of it came back; Mappings counts
// the process's shared memory mappings, which a test compares itself.
//
// A check compares sets, not counts: a descriptor is new when its number
// and target (readlink of /proc/self/fd/N) were not in the snapshot, a
// goroutine when its id was not. What was open before and closed since is
// never a leak. The check polls until nothing new is left, for a bound
// (Timeout, 5 s by default), so that a goroutine still returning or a
// descriptor another goroutine closes a moment later does not fail a test;
// what is still there at the bound is reported by name: descriptor numbers
// with their targets, the stacks of the new goroutines, the paths and the
// mount points.
//
// The counts are of the whole process. A test that uses the check must not
// run in parallel with other tests (t.Parallel) of its binary; goroutines
// that run a test (testing.tRunner) are never counted.
//
// Take warms up what the Go runtime opens once per process (the network
// poller's descriptors) before it looks, so a first use inside the test is
// not taken for a leak. Other lazily opened, process-lifetime state must be
// warmed up by the test itself before it takes the snapshot.
//
// A Snapshot is used by one goroutine.
package leakcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout is how long Check waits for what is new to go when
// Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Options says what a Snapshot holds.
type Options struct {
	FDs        bool // open file descriptors, by number and target
	Goroutines bool // goroutines, by id

	// Dirs are directories whose entries, walked recursively, must come
	// back: /run/netns for namespace names, a bpffs directory for pins.
	Dirs []Dir
	// Mounts are prefixes of mount points (the fifth field of
	// /proc/self/mountinfo) whose mounts must come back.
	Mounts []string

	// Timeout bounds how long Check waits; zero means DefaultTimeout.
	Timeout time.Duration
}

// Dir names the entries of one directory tree a Snapshot follows.
type Dir struct {
	Path   string // root of the walk; a missing root has no entries
	Prefix string // only entries whose path relative to Path starts with it; "" for all
}

// Snapshot is what the process held when it was taken.
type Snapshot struct {
	opts  Options
	state state
	self  uint64 // id of the goroutine that took the snapshot
}

// state is one look at the process: each map is keyed by what identifies
// an item and holds how to report it.
type state struct {
	fds    map[string]string // "N -> target" -> "fd N -> target"
	gs     map[uint64]string // goroutine id -> its stack
	paths  map[string]string // full path -> "path P"
	mounts map[string]string // mount point (with id) -> "mount P"
}

// Take warms up the runtime's poller and snapshots what o names. It fails
// tb when /proc cannot be read.
func Take(tb testing.TB, o Options) *Snapshot {
	tb.Helper()
	warmUp()
	s := &Snapshot{opts: o, self: curGoroutine()}
	st, err := look(o, s.self)
	if err != nil {
		tb.Fatalf("leakcheck: %v", err)
	}
	s.state = st
	return s
}

// AtCleanup takes a snapshot now and checks it when tb's cleanups run;
// registered first, it runs after the cleanups registered later (rigs,
// servers), so what they own is gone by then.
func AtCleanup(tb testing.TB, o Options) {
	tb.Helper()
	s := Take(tb, o)
	tb.Cleanup(func() { s.Check(tb) })
}

// Check waits until nothing is left that was not in the snapshot, and
// otherwise fails tb (Errorf) with what is left. It reports whether the
// process came back.
func (s *Snapshot) Check(tb testing.TB) bool {
	tb.Helper()
	if err := s.Wait(); err != nil {
		tb.Errorf("%v", err)
		return false
	}
	return true
}

// ErrLeak is wrapped by the error Wait returns when something is left.
var ErrLeak = errors.New("leak")

// Wait polls until nothing is left that was not in the snapshot, for at
// most the timeout; it returns nil then, or an error wrapping ErrLeak that
// names each descriptor, goroutine, path and mount point still there.
func (s *Snapshot) Wait() error {
	timeout := s.opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := s.Diff()
		if err == nil || !errors.Is(err, ErrLeak) || time.Now().After(deadline) {
			if err != nil {
				err = fmt.Errorf("%w (after %v)", err, time.Since(start).Round(time.Millisecond))
			}
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Diff looks once, without waiting: it returns nil when nothing is there
// that was not in the snapshot, or an error wrapping ErrLeak that names
// what is. It is for tests that poll several conditions under one
// deadline of their own.
func (s *Snapshot) Diff() error {
	now, err := look(s.opts, curGoroutine())
	if err != nil {
		return fmt.Errorf("leakcheck: %w", err)
	}
	if left := s.state.newIn(now); len(left) > 0 {
		return fmt.Errorf("leakcheck: %w: %d left:\n%s", ErrLeak, len(left), strings.Join(left, "\n"))
	}
	return nil
}

// newIn lists what now holds that s did not, fds first, in a stable order.
func (s state) newIn(now state) []string {
	var left []string
	for _, pair := range [][2]map[string]string{{s.fds, now.fds}, {s.paths, now.paths}, {s.mounts, now.mounts}} {
		var part []string
		for k, v := range pair[1] {
			if _, ok := pair[0][k]; !ok {
				part = append(part, v)
			}
		}
		slices.SortFunc(part, compareNatural)
		left = append(left, part...)
	}
	var ids []uint64
	for id := range now.gs {
		if _, ok := s.gs[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		left = append(left, now.gs[id])
	}
	return left
}

// compareNatural orders "fd 9 ..." before "fd 10 ...".
func compareNatural(a, b string) int {
	fa, fb := strings.Fields(a), strings.Fields(b)
	if len(fa) > 1 && len(fb) > 1 && fa[0] == fb[0] {
		na, ea := strconv.Atoi(fa[1])
		nb, eb := strconv.Atoi(fb[1])
		if ea == nil && eb == nil && na != nb {
			return na - nb
		}
	}
	return strings.Compare(a, b)
}

// look reads what o names; goroutine skip (the caller) is left out.
func look(o Options, skip uint64) (state, error) {
	var st state
	var err error
	if o.FDs {
		if st.fds, err = fds(); err != nil {
			return st, err
		}
	}
	if o.Goroutines {
		st.gs = goroutines(skip)
	}
	if len(o.Dirs) > 0 {
		st.paths = map[string]string{}
		for _, d := range o.Dirs {
			if err := walk(d, st.paths); err != nil {
				return st, err
			}
		}
	}
	if len(o.Mounts) > 0 {
		if st.mounts, err = mounts(o.Mounts); err != nil {
			return st, err
		}
	}
	return st, nil
}

// fds lists /proc/self/fd with each descriptor's target. A descriptor
// closed between the listing and its readlink (the listing's own among
// them) is left out.
func fds() (map[string]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list descriptors: %w", err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		k := e.Name() + " -> " + target
		m[k] = "fd " + k
	}
	return m, nil
}

// goroutines parses the stacks of all goroutines, keyed by id, without
// skip's and without those running a test.
func goroutines(skip uint64) map[uint64]string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := map[uint64]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		id, ok := goroutineID(g)
		if !ok || id == skip || bytes.Contains(g, []byte("\ntesting.tRunner(")) {
			continue
		}
		m[id] = string(bytes.TrimSpace(g))
	}
	return m
}

// goroutineID reads N from a stack that starts "goroutine N [".
func goroutineID(stack []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(stack, []byte("goroutine "))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(string(num), 10, 64)
	return id, err == nil
}

// curGoroutine is the id of the calling goroutine.
func curGoroutine() uint64 {
	buf := make([]byte, 64)
	id, _ := goroutineID(buf[:runtime.Stack(buf, false)])
	return id
}

// walk adds the entries under d.Path that match d.Prefix.
func walk(d Dir, into map[string]string) error {
	err := filepath.WalkDir(d.Path, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile, or no root at all
			}
			return err
		}
		if p == d.Path {
			return nil
		}
		rel, _ := filepath.Rel(d.Path, p)
		if strings.HasPrefix(rel, d.Prefix) {
			into[p] = "path " + p
		} else if e.IsDir() && !strings.HasPrefix(d.Prefix, rel+string(filepath.Separator)) {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", d.Path, err)
	}
	return nil
}

// mounts lists the mount points of /proc/self/mountinfo that start with
// one of prefixes, keyed by mount id and point.
func mounts(prefixes []string) (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(fields[4], p) {
				m[fields[0]+" "+fields[4]] = "mount " + fields[4]
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return m, nil
}

// warmUp makes the runtime open its poller's descriptors, which live as
// long as the process, so that they are in the snapshot.
func warmUp() {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	r.SetReadDeadline(time.Now()) // a pollable file: the poller is up now
	r.Close()
	w.Close()
}
