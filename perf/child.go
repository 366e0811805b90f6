package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// child is the harness's handle on a server process of its own (perf
// tcpserve, perf echoserve) running in host B and driven over its standard
// input and output: one command line in, one reply line out. Its methods
// are safe across goroutines (one command at a time).
type child struct {
	name   string // what errors call it: "tcp server", "echo server"
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *capBuffer

	mu     sync.Mutex // serialises commands and guards exited
	exited bool
}

// childTimeout bounds the wait for a reply; a child that does not answer
// in time is killed.
const childTimeout = 20 * time.Second

// childExe is the executable the harness starts as its server processes:
// this program (the harness, or the package's test binary, whose TestMain
// runs the same modes for the same arguments).
var childExe = os.Executable

// childMain is the main of a server process: run reads commands from in
// and answers each with reply, one line on stdout. An error run returns
// is a last line "error MESSAGE" and exit status 1.
func childMain(run func(in io.Reader, reply func(string, ...any)) error) int {
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	if err := run(os.Stdin, reply); err != nil {
		replyErr(reply, err)
		return 1
	}
	return 0
}

// replyErr answers "ok", or "error MESSAGE" (on one line).
func replyErr(reply func(string, ...any), err error) {
	if err != nil {
		reply("error %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	reply("ok")
}

// startChild starts this executable with args in host h's namespace (on
// cpus, when not nil) and waits for its first line, "ready".
func startChild(h *nstest.Host, name string, cpus *unix.CPUSet, args []string) (*child, error) {
	// The child inherits the namespace of the thread that forks it.
	return launchChild(name, args, func(cmd *exec.Cmd) error {
		return h.Do(func() error { return startOn(cpus, cmd.Start) })
	})
}

// startChildHere starts this executable with args where this process runs
// (its namespaces, its CPUs) and waits for its first line, "ready".
func startChildHere(name string, args []string) (*child, error) {
	return launchChild(name, args, (*exec.Cmd).Start)
}

// launchChild makes the child's command, has start start it and waits for
// its first line, "ready".
func launchChild(name string, args []string, start func(*exec.Cmd) error) (*child, error) {
	exe, err := childExe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &child{name: name, cmd: exec.Command(exe, args...)}
	c.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if c.in, c.out, c.stderr, err = pipeChild(c.cmd, 1<<20); err != nil {
		return nil, err
	}
	if err := start(c.cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	line, err := c.readLine()
	if err == nil && line != "ready" {
		err = fmt.Errorf("%s: %s", name, line)
	}
	if err != nil {
		return nil, errors.Join(err, c.kill())
	}
	return c, nil
}

// pipeChild makes cmd's standard input and output pipes and its standard
// error a buffer keeping the first max bytes (capBuffer).
func pipeChild(cmd *exec.Cmd, max int) (in io.WriteCloser, out *bufio.Reader, stderr *capBuffer, err error) {
	stderr = &capBuffer{max: max}
	cmd.Stderr = stderr
	if in, err = cmd.StdinPipe(); err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	return in, bufio.NewReader(stdout), stderr, nil
}

// readLine reads one line of the child's, killing it when none comes in
// childTimeout.
func (c *child) readLine() (string, error) {
	t := time.AfterFunc(childTimeout, func() { c.cmd.Process.Kill() })
	line, err := c.out.ReadString('\n')
	stopped := t.Stop()
	if err != nil {
		if !stopped {
			err = fmt.Errorf("no reply in %v: %w", childTimeout, err)
		}
		return "", fmt.Errorf("%s: %w (stderr: %s)", c.name, err, c.stderr.brief(2000))
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// call sends one command and returns the reply line; a reply "error ..."
// is an error.
func (c *child) call(cmd string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exited {
		return "", fmt.Errorf("%s: already stopped", c.name)
	}
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return "", fmt.Errorf("%s: %s: %w", c.name, cmd, err)
	}
	line, err := c.readLine()
	if err != nil {
		return "", err
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return "", fmt.Errorf("%s: %s: %s", c.name, cmd, msg)
	}
	return line, nil
}

// exit waits for a child that was told to quit to end.
func (c *child) exit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited = true
	c.in.Close()
	return c.wait()
}

func (c *child) wait() error {
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w (stderr: %s)", c.name, err, c.stderr.brief(2000))
		}
		return nil
	case <-time.After(childTimeout):
		c.cmd.Process.Kill()
		return fmt.Errorf("%s did not exit in %v (stderr: %s)", c.name, childTimeout, c.stderr.brief(2000))
	}
}

// kill ends a child that has not been quit (on an error path).
func (c *child) kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exited {
		return nil
	}
	c.exited = true
	c.in.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
	return nil
}

// capBuffer keeps what is written to it, up to max bytes (the rest is
// counted, not kept); safe across goroutines.
type capBuffer struct {
	max int

	mu      sync.Mutex // guards b and dropped
	b       []byte
	dropped int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(p), c.max-len(c.b))
	c.b = append(c.b, p[:n]...)
	c.dropped += len(p) - n
	return len(p), nil
}

// String is everything kept.
func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.b)
}

// brief is what was kept, at most about n bytes of it: the start (where a
// Go program's panic or fatal error says what went wrong) and the end.
func (c *capBuffer) brief(n int) string {
	s := c.String()
	if len(s) > n {
		head := s[:n/4]
		if i := strings.LastIndexByte(head, '\n'); i > 0 {
			head = head[:i]
		}
		s = head + " … " + s[len(s)-(n-n/4):]
	}
	return strings.TrimSpace(s)
}

// count is how many kept lines contain sub.
func (c *capBuffer) count(sub string) int {
	return strings.Count(c.String(), sub)
}
