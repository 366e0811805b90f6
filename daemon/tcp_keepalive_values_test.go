package daemon

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestTCPKeepaliveValuesMatchKernel: SetKeepAlivePeriod and
// SetKeepAliveConfig of a TCP Conn on the wire take what a kernel
// connection's take and refuse what it refuses: an idle time or interval
// over Linux's 32767 s, or a count over 127, fails with EINVAL in an
// *os.SyscallError naming "setsockopt", and so does one of those with
// keepalive turned off; zero, negative and sub-second values succeed. (A
// cut-through session fails every one with flow.ErrNotSupported, as
// doc.go says.)
func TestTCPKeepaliveValuesMatchKernel(t *testing.T) {
	r := newSemConnRig(t)
	periods := []time.Duration{-1, 0, time.Millisecond, time.Second, 32767 * time.Second,
		32767*time.Second + 1, 10 * time.Hour, 1<<63 - 1}
	configs := []net.KeepAliveConfig{
		{Enable: true, Idle: time.Minute, Interval: 10 * time.Second, Count: 127},
		{Enable: true, Count: 128},
		{Enable: true, Count: -1},
		{Enable: true, Interval: 32768 * time.Second},
		{Enable: true, Idle: 1<<63 - 1},
		{Enable: false, Idle: 10 * time.Hour},
		{Enable: true, Idle: -1, Interval: -1, Count: -1},
		{Enable: true, Idle: 500 * time.Millisecond, Interval: time.Nanosecond, Count: 1},
	}
	cases := []semCase{
		{name: "keepalive values", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			for _, d := range periods {
				tr.shapeErr(fmt.Sprintf("SetKeepAlivePeriod(%v)", d),
					callMethod(c, func(k keepAlivePr) error { return k.SetKeepAlivePeriod(d) }))
			}
			for _, k := range configs {
				tr.shapeErr(fmt.Sprintf("SetKeepAliveConfig(%+v)", k),
					callMethod(c, func(x keepAliveCf) error { return x.SetKeepAliveConfig(k) }))
			}
			tr.shapeErr("SetKeepAlive(false)", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(false) }))
			n, err := c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
			n, err = readOne(peer)
			tr.shapeCall("peer reads it", n, err)
		}, documented: func(k semKind) map[string]string {
			if !k.ct {
				return nil
			}
			m := map[string]string{}
			for _, d := range periods {
				m[fmt.Sprintf("SetKeepAlivePeriod(%v)", d)] = "flow.ErrNotSupported"
			}
			for _, x := range configs {
				m[fmt.Sprintf("SetKeepAliveConfig(%+v)", x)] = "flow.ErrNotSupported"
			}
			m["SetKeepAlive(false)"] = "flow.ErrNotSupported"
			return m
		}},
	}
	runSemCases(t, r.kinds(), cases)
}
