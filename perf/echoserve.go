package main

// The echo scenarios' server runs in a process of its own (perf
// echoserve), started in host B's namespace as the TCP server is
// (child.go): the kernel echo, or for xsessiond the echo app and the
// daemon (in a process of its own beside it, xsdaemon.go, unless
// --xs-daemon-process=false), each in a Go runtime of its own, as a user
// runs a server, while the client stays in the harness in host A.
//
// In the harness's process, the client and the server shared one runtime.
// For xsessiond, the worker holds a P of its own, so with GOMAXPROCS 2 the
// client's sender, its receiver and the echo app took turns on the one
// P left: a burst the sender wrote kept the app from running until the
// last request of it was written (a scheduler trace showed one thread of
// the process running them all, on the worker's CPU, while the other CPU
// idled). That is the harness's doing, not the daemon's.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// echoServeMain is `perf echoserve`: the echo server of one scenario
// repetition, started by the harness inside host B's network namespace.
// It starts the echo server (newEchoer) on the Env given, prints "ready",
// then answers one line per command read from stdin:
//
//	drops      -> Drops JSON: the server's own drop counters since start ({} if none)
//	breakdown  -> Drops JSON: what it can say of where drops happened ({} if nothing)
//	statsline  -> one line of the server's counters ("" if it keeps none)
//	quit       -> echoQuit JSON, once the server stopped
//
// An error is a line "error MESSAGE"; stdin closing is quit.
func echoServeMain(args []string) int {
	fs := flag.NewFlagSet("echoserve", flag.ContinueOnError)
	impl := fs.String("impl", ImplKernel, "kernel or xsessiond")
	envJSON := fs.String("env", "{}", "where to serve: Env as JSON (address, port, interface, queues)")
	xsJSON := fs.String("xs", "{}", "xsessiond: XsessiondOptions as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return childMain(func(in io.Reader, reply func(string, ...any)) error {
		return runEchoServe(*impl, *envJSON, *xsJSON, in, reply)
	})
}

// echoQuit is echoserve's reply to quit.
type echoQuit struct {
	// Notes are the lines xsCaptureNote was told (a capture's summary).
	Notes []string `json:"notes,omitempty"`
}

func runEchoServe(impl, envJSON, xsJSON string, in io.Reader, reply func(string, ...any)) (err error) {
	var env Env
	if err := json.Unmarshal([]byte(envJSON), &env); err != nil {
		return fmt.Errorf("--env: %w", err)
	}
	// This process was started in the receiving namespace: every thread
	// of it is there.
	env.Do = func(fn func() error) error { return fn() }
	if err := json.Unmarshal([]byte(xsJSON), &xsOptions); err != nil {
		return fmt.Errorf("--xs: %w", err)
	}
	var q echoQuit
	xsCaptureNote = func(line string) { q.Notes = append(q.Notes, line) }
	e, err := newEchoer(impl)
	if err != nil {
		return err
	}
	if err := e.Start(&env); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, e.Stop())
		}
	}()
	reply("ready")
	replyJSON := func(v any) {
		b, _ := json.Marshal(v)
		reply("%s", b)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "drops":
			d := Drops{}
			if dc, ok := e.(dropCounter); ok {
				d = dc.Drops()
			}
			replyJSON(d)
		case "breakdown":
			d := Drops{}
			if bd, ok := e.(breakdown); ok {
				d = bd.Breakdown()
			}
			replyJSON(d)
		case "statsline":
			line := ""
			if sl, ok := e.(interface{ StatsLine() string }); ok {
				line = sl.StatsLine()
			}
			reply("%s", strings.ReplaceAll(line, "\n", "; "))
		case "quit":
			stopped = true
			if err := e.Stop(); err != nil {
				return err
			}
			replyJSON(q)
			return nil
		default:
			reply("error unknown command %q", cmd)
		}
	}
	return nil // stdin closed: the deferred Stop
}

// echoChild is an Echoer whose server runs in a perf echoserve process in
// host h. It counts drops and says where they happened as the server in
// it does; a failed call's error is returned by Stop.
type echoChild struct {
	impl string
	h    *nstest.Host
	cpus *unix.CPUSet // the CPUs the process runs on; nil: any
	c    *child
	err  error // the first failed call's, returned by Stop
}

func newEchoChild(impl string, h *nstest.Host, cpus *unix.CPUSet) *echoChild {
	return &echoChild{impl: impl, h: h, cpus: cpus}
}

func (e *echoChild) Name() string { return e.impl }

// Start starts the server process on env, which must be host h's.
func (e *echoChild) Start(env *Env) error {
	envJSON, err := json.Marshal(env)
	if err != nil {
		return err
	}
	xsJSON, err := json.Marshal(xsOptions)
	if err != nil {
		return err
	}
	e.c, err = startChild(e.h, "echo server", e.cpus, []string{"echoserve", "--impl", e.impl, "--env", string(envJSON), "--xs", string(xsJSON)})
	return err
}

// call runs one command, keeping the first error for Stop.
func (e *echoChild) call(cmd string) (string, bool) {
	line, err := e.c.call(cmd)
	if err != nil {
		e.fail(err)
		return "", false
	}
	return line, true
}

func (e *echoChild) drops(cmd string) Drops {
	d := Drops{}
	if line, ok := e.call(cmd); ok {
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			e.fail(fmt.Errorf("echo server %s %q: %w", cmd, line, err))
		}
	}
	return d
}

// Drops are the server's own drop counters since Start (dropCounter).
func (e *echoChild) Drops() Drops { return e.drops("drops") }

// Breakdown is the server's breakdown of where drops happened.
func (e *echoChild) Breakdown() Drops { return e.drops("breakdown") }

// StatsLine is the server's line of counters; "" if it keeps none.
func (e *echoChild) StatsLine() string {
	line, _ := e.call("statsline")
	return line
}

// Stop stops the server and waits for its process to end; the capture
// notes it passes on go to xsCaptureNote.
func (e *echoChild) Stop() error {
	if e.c == nil {
		return e.err
	}
	line, err := e.c.call("quit")
	err = errors.Join(err, e.c.exit())
	e.c = nil
	var q echoQuit
	if err == nil {
		if jerr := json.Unmarshal([]byte(line), &q); jerr != nil {
			err = fmt.Errorf("echo server quit %q: %w", line, jerr)
		}
	}
	if xsCaptureNote != nil {
		for _, n := range q.Notes {
			xsCaptureNote(n)
		}
	}
	return errors.Join(e.err, err)
}

// fail keeps err for Stop unless an earlier error is kept.
func (e *echoChild) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}
