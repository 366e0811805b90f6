package datapath

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xsessiond/xsessiond/datapath/reasm"
)

// sysctlInt reads the integer setting name (a path under /proc/sys) of
// the Engine's netns. ok is false when it cannot be read.
func (e *Engine) sysctlInt(name string) (v int, ok bool) {
	if e.ns == nil || e.nsh < 0 {
		return 0, false
	}
	_ = doIn(e.nsh, func() error {
		b, err := os.ReadFile("/proc/sys/" + name)
		if err != nil {
			return err
		}
		v, err = strconv.Atoi(strings.TrimSpace(string(b)))
		ok = err == nil
		return err
	})
	return v, ok
}

// readFragTimes fills the reassembly timeouts the configuration leaves
// zero with the namespace's kernel's: net.ipv4.ipfrag_time and
// net.ipv6.ip6frag_time (seconds), so that a datagram's fragments may take
// as long as the kernel's reassembly gives them (at most reasm.MaxTimeout).
// One it cannot read (or 0) keeps reasm's default, which is the kernel's.
func (e *Engine) readFragTimes() {
	c := &e.cfg.Reassembly
	for _, s := range []struct {
		name string
		d    *time.Duration
	}{{"net/ipv4/ipfrag_time", &c.Timeout}, {"net/ipv6/ip6frag_time", &c.Timeout6}} {
		if *s.d > 0 {
			continue
		}
		if v, ok := e.sysctlInt(s.name); ok && v > 0 {
			*s.d = min(time.Duration(min(v, 1<<31))*time.Second, reasm.MaxTimeout)
		}
	}
	*c = c.WithDefaults()
}

// readHopLimits reads the TTL and hop limit the namespace's kernel sockets
// send with, for the datapath's frames and TCP segments to go with the
// same: net.ipv4.ip_default_ttl, and the interface's IPv6 hop_limit (a
// router's advertisement may set it). One it cannot read is 0 (64).
func (e *Engine) readHopLimits() {
	for i, name := range []string{"net/ipv4/ip_default_ttl", "net/ipv6/conf/" + e.cfg.IfName + "/hop_limit"} {
		if v, ok := e.sysctlInt(name); ok && v > 0 && v < 256 {
			e.hop[i] = uint8(v)
		}
	}
}
