package daemon

import (
	"net"
	"testing"
	"time"
)

// TestTCPSettersOfAnEndedConnMatchKernel: the setters of a TCP Conn whose
// connection is over but that is not closed yet (its peer reset it, or
// closed, or both halves were closed) succeed, as setsockopt(2) of a
// kernel socket in CLOSE or CLOSE_WAIT does: SetKeepAlive,
// SetKeepAlivePeriod and SetKeepAliveConfig (on the wire; a cut-through
// session fails them with flow.ErrNotSupported, as doc.go says),
// SetLinger and the deadlines; and values past Linux's bounds still fail
// with EINVAL.
func TestTCPSettersOfAnEndedConnMatchKernel(t *testing.T) {
	r := newSemConnRig(t)
	keepalive := []string{"SetKeepAlive(true)", "SetKeepAlivePeriod", "SetKeepAliveConfig", "SetKeepAlive(false)", "SetKeepAlivePeriod(10h)"}
	setters := func(c net.Conn, tr *semTrace) {
		tr.shapeErr("SetKeepAlive(true)", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(true) }))
		tr.shapeErr("SetKeepAlivePeriod", callMethod(c, func(k keepAlivePr) error { return k.SetKeepAlivePeriod(time.Minute) }))
		tr.shapeErr("SetKeepAliveConfig", callMethod(c, func(k keepAliveCf) error {
			return k.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: time.Second, Count: 3})
		}))
		tr.shapeErr("SetKeepAlive(false)", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(false) }))
		tr.shapeErr("SetKeepAlivePeriod(10h)", callMethod(c, func(k keepAlivePr) error { return k.SetKeepAlivePeriod(10 * time.Hour) }))
		tr.shapeErr("SetLinger(0)", callMethod(c, func(l lingerer) error { return l.SetLinger(0) }))
		tr.shapeErr("SetLinger(-1)", callMethod(c, func(l lingerer) error { return l.SetLinger(-1) }))
		tr.shapeErr("SetDeadline", c.SetDeadline(time.Now().Add(5*time.Second)))
	}
	cases := []semCase{
		{name: "after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			setters(c, tr)
			n, err := c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			setters(c, tr)
			tr.shapeErr("Close", c.Close())
		}},
		{name: "after both halves closed", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			tr.shapeErr("peer CloseWrite", callMethod(peer, closeWriter.CloseWrite))
			n, err := readOne(c)
			tr.shapeCall("Read", n, err)
			time.Sleep(300 * time.Millisecond) // the FIN is acknowledged
			setters(c, tr)
			tr.shapeErr("Close", c.Close())
		}},
		{name: "after the peer closed", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("peer Close", peer.Close())
			n, err := readOne(c)
			tr.shapeCall("Read", n, err)
			time.Sleep(300 * time.Millisecond)
			setters(c, tr)
			tr.shapeErr("Close", c.Close())
		}},
	}
	for i := range cases {
		cases[i].documented = func(k semKind) map[string]string {
			if !k.ct {
				return nil
			}
			m := map[string]string{}
			for _, s := range keepalive {
				m[s] = "flow.ErrNotSupported"
			}
			return m
		}
	}
	runSemCases(t, r.kinds(), cases)
}
