package main

// The daemon in a process of its own (--xs-daemon-process): the process of
// the harness's app (the echo or TCP server, or the harness itself for the
// UDP receive rows) starts perf xsdaemon beside it, in its namespaces and
// on its CPUs, and the app attaches over the daemon's control socket, as
// an app attaches to xsessiond run. Without the option the daemon runs in
// the app's process, where the app's goroutines and the daemon's share one
// Go runtime.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
)

// xsDaemonMain is perf xsdaemon: the daemon on --iface, driven over stdin
// and stdout (childMain) by the process that started it. Commands:
// "socket" (the control socket's path), "stats" and "kicks" (the engine's
// counters as JSON), "cpu" (this process's user+system time so far, in
// ns), "prof FILE" and "unprof" (a CPU profile of this process), "quit".
// Stdin closing is quit.
func xsDaemonMain(args []string) int {
	fs := flag.NewFlagSet("xsdaemon", flag.ContinueOnError)
	iface := fs.String("iface", "", "the interface the daemon serves")
	netns := fs.String("netns", "", "the interface's netns name (this process runs in it)")
	queues := fs.Int("queues", 1, "queues of the interface")
	xsJSON := fs.String("xs", "{}", "XsessiondOptions as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return childMain(func(in io.Reader, reply func(string, ...any)) (err error) {
		var o XsessiondOptions
		if err := json.Unmarshal([]byte(*xsJSON), &o); err != nil {
			return fmt.Errorf("--xs: %w", err)
		}
		if err := daemon.SetSchedPolicy(o.SchedPolicy); err != nil {
			return err
		}
		x, err := startXsDaemon(*iface, *netns, *queues, o, false)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, x.close()) }()
		var prof profile
		defer func() { err = errors.Join(err, prof.stop()) }()
		reply("ready")
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
			switch cmd {
			case "socket":
				reply("%s", x.d.Socket())
			case "stats":
				b, _ := json.Marshal(x.stats())
				reply("%s", b)
			case "kicks":
				b, _ := json.Marshal(x.kicks())
				reply("%s", b)
			case "cpu":
				reply("%d", procCPU().Nanoseconds())
			case "prof":
				replyErr(reply, prof.start(arg))
			case "unprof":
				replyErr(reply, prof.stop())
			case "quit":
				reply("ok")
				return nil
			default:
				reply("error unknown command %q", cmd)
			}
		}
		return nil
	})
}

// profile is a CPU profile of this process, written to a file.
type profile struct{ f *os.File }

func (p *profile) start(path string) error {
	if p.f != nil {
		return errors.New("profile already running")
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	p.f = f
	return nil
}

// stop ends the profile, if one runs.
func (p *profile) stop() error {
	if p.f == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	return nil
}

// xsDaemonProcess is the daemon started by startXsDaemonProcess.
type xsDaemonProcess struct {
	c    *child
	sock string
}

// startXsDaemonProcess starts perf xsdaemon on iface beside this process
// (its namespaces, its CPUs) and asks it for its control socket.
func startXsDaemonProcess(iface, netns string, queues int, xsJSON string) (*xsDaemonProcess, error) {
	c, err := startChildHere("xsessiond daemon", []string{"xsdaemon", "--iface", iface, "--netns", netns,
		"--queues", strconv.Itoa(queues), "--xs", xsJSON})
	if err != nil {
		return nil, err
	}
	sock, err := c.call("socket")
	if err != nil {
		return nil, errors.Join(err, c.kill())
	}
	return &xsDaemonProcess{c: c, sock: sock}, nil
}

func (p *xsDaemonProcess) socket() string { return p.sock }

// stats are the daemon's engine counters; zero when its process did not
// answer (its error comes at close).
func (p *xsDaemonProcess) stats() datapath.Stats {
	var st datapath.Stats
	p.getJSON("stats", &st)
	return st
}

// kicks are its apps' kicks of the workers, as stats.
func (p *xsDaemonProcess) kicks() datapath.KickStats {
	var k datapath.KickStats
	p.getJSON("kicks", &k)
	return k
}

func (p *xsDaemonProcess) getJSON(cmd string, v any) {
	if line, err := p.c.call(cmd); err == nil {
		_ = json.Unmarshal([]byte(line), v)
	}
}

// profile starts a CPU profile of the daemon's process, written to path.
func (p *xsDaemonProcess) profile(path string) (func() error, error) {
	if _, err := p.c.call("prof " + path); err != nil {
		return nil, err
	}
	return func() error {
		_, err := p.c.call("unprof")
		return err
	}, nil
}

// cpu is the daemon process's user+system time so far; 0 on an error,
// which is returned too.
func (p *xsDaemonProcess) cpu() (time.Duration, error) {
	line, err := p.c.call("cpu")
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(line, 10, 64)
	return time.Duration(ns), err
}

// close stops the daemon and waits for its process to end.
func (p *xsDaemonProcess) close() error {
	_, err := p.c.call("quit")
	return errors.Join(err, p.c.exit())
}
