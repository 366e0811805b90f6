package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// tcpChild is the harness's handle on a perf tcpserve process running in
// host B. Its methods are safe across goroutines (one command at a time).
type tcpChild struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *capBuffer

	mu     sync.Mutex // serialises commands and guards exited
	exited bool
}

// tcpChildTimeout bounds the wait for a reply; a child that does not answer
// in time is killed.
const tcpChildTimeout = 20 * time.Second

// tcpServeExe is the executable started as perf tcpserve: this program
// (the harness, or the package's test binary, whose TestMain runs
// tcpServeMain for the same arguments).
var tcpServeExe = os.Executable

// startTCPChild starts perf tcpserve for s in host B of p, listening on
// B's address and port, and waits for it to be ready.
func startTCPChild(p *nstest.Pair, s Scenario, port uint16, xs XsessiondOptions) (*tcpChild, error) {
	exe, err := tcpServeExe()
	if err != nil {
		return nil, fmt.Errorf("tcp server: %w", err)
	}
	xsJSON, err := json.Marshal(xs)
	if err != nil {
		return nil, err
	}
	args := []string{"tcpserve", "--impl", s.Impl, "--mode", tcpMode(s.Kind),
		"--listen", netip.AddrPortFrom(p.B.IPv4, port).String(),
		"--iface", p.B.Link, "--netns", p.B.Name, "--queues", strconv.Itoa(s.Queues), "--xs", string(xsJSON)}
	c := &tcpChild{cmd: exec.Command(exe, args...)}
	c.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if c.in, c.out, c.stderr, err = pipeChild(c.cmd, 1<<20); err != nil {
		return nil, err
	}
	// The child inherits the namespace of the thread that forks it.
	if err := p.B.Do(c.cmd.Start); err != nil {
		return nil, fmt.Errorf("start tcp server: %w", err)
	}
	line, err := c.readLine()
	if err == nil && line != "ready" {
		err = fmt.Errorf("tcp server: %s", line)
	}
	if err != nil {
		return nil, errors.Join(err, c.kill())
	}
	return c, nil
}

// pipeChild makes cmd's standard input and output pipes and its standard
// error a buffer keeping the last max bytes.
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

func tcpMode(k Kind) string {
	switch k {
	case KindTCPRR:
		return tcpModeRR
	case KindTCPCRR:
		return tcpModeCRR
	case KindTCPRecv:
		return tcpModeRecv
	case KindTCPSend:
		return tcpModeSend
	}
	return string(k)
}

// readLine reads one line of the child's, killing it when none comes in
// tcpChildTimeout.
func (c *tcpChild) readLine() (string, error) {
	t := time.AfterFunc(tcpChildTimeout, func() { c.cmd.Process.Kill() })
	line, err := c.out.ReadString('\n')
	stopped := t.Stop()
	if err != nil {
		if !stopped {
			err = fmt.Errorf("no reply in %v: %w", tcpChildTimeout, err)
		}
		return "", fmt.Errorf("tcp server: %w (stderr: %s)", err, c.stderr.tail(2000))
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// call sends one command and returns the reply line; a reply "error ..."
// is an error.
func (c *tcpChild) call(cmd string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exited {
		return "", errors.New("tcp server: already stopped")
	}
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return "", fmt.Errorf("tcp server: %s: %w", cmd, err)
	}
	line, err := c.readLine()
	if err != nil {
		return "", err
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return "", fmt.Errorf("tcp server: %s: %s", cmd, msg)
	}
	return line, nil
}

func parseTCPStats(line string) (tcpStats, error) {
	var st tcpStats
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		return st, fmt.Errorf("tcp server stats %q: %w", line, err)
	}
	return st, nil
}

// stats reads the server's counters and its CPU time.
func (c *tcpChild) stats() (tcpStats, error) {
	line, err := c.call("stats")
	if err != nil {
		return tcpStats{}, err
	}
	return parseTCPStats(line)
}

// quit stops the server and returns its final counters once every
// connection is done; the process has exited when it returns.
func (c *tcpChild) quit() (tcpStats, error) {
	line, err := c.call("quit")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exited = true
	c.in.Close()
	werr := c.wait()
	if err != nil {
		return tcpStats{}, errors.Join(err, werr)
	}
	st, err := parseTCPStats(line)
	return st, errors.Join(err, werr)
}

func (c *tcpChild) wait() error {
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("tcp server: %w (stderr: %s)", err, c.stderr.tail(2000))
		}
		return nil
	case <-time.After(tcpChildTimeout):
		c.cmd.Process.Kill()
		return fmt.Errorf("tcp server did not exit in %v (stderr: %s)", tcpChildTimeout, c.stderr.tail(2000))
	}
}

// kill ends a child that has not been quit (on an error path).
func (c *tcpChild) kill() error {
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

// tail is the last n bytes kept.
func (c *capBuffer) tail(n int) string {
	s := c.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}

// count is how many kept lines contain sub.
func (c *capBuffer) count(sub string) int {
	return strings.Count(c.String(), sub)
}
