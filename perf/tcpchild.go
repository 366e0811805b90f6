package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// tcpChild is the harness's handle on the perf tcpserve process of a TCP
// scenario (child.go).
type tcpChild struct{ *child }

// startTCPChild starts perf tcpserve for s in host B of p (on cpus, when
// not nil), listening on B's address and port, and waits for it to be
// ready. The kernel server's sockets take congestion control cc
// (ccControl).
func startTCPChild(p *nstest.Pair, s Scenario, port uint16, cc string, xs XsessiondOptions, cpus *unix.CPUSet) (*tcpChild, error) {
	xsJSON, err := json.Marshal(xs)
	if err != nil {
		return nil, err
	}
	args := []string{"tcpserve", "--impl", s.Impl, "--mode", tcpMode(s.Kind),
		"--listen", netip.AddrPortFrom(p.B.IPv4, port).String(),
		"--cc", cc, "--iface", p.B.Link, "--netns", p.B.Name, "--queues", strconv.Itoa(s.Queues), "--xs", string(xsJSON)}
	c, err := startChild(p.B, "tcp server", cpus, args)
	if err != nil {
		return nil, err
	}
	return &tcpChild{c}, nil
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
	werr := c.exit()
	if err != nil {
		return tcpStats{}, errors.Join(err, werr)
	}
	st, err := parseTCPStats(line)
	return st, errors.Join(err, werr)
}
