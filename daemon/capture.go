package daemon

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

// ctl capture: the daemon answers a Capture request with the read end of
// a pipe and writes a capture stream into its write end (capstream.go:
// a header naming the interface and queues, one record per frame, an end
// record with each queue's losses); the CLI turns it into pcapng with
// CaptureToPcapng. A pipe keeps frames off the control socket, whose
// records stay small; the pcapng encoding happens in the CLI's process
// rather than in the daemon's, where the workers run.
//
// The capture ends after Count frames, after Duration, when the reader
// stops reading for captureStall or closes the pipe, when the control
// connection that asked for it closes, or when the daemon stops.

const (
	capturePoll  = 5 * time.Millisecond
	captureStall = 2 * time.Second
)

// capture starts a capture for h and returns the pipe's read end.
func (h *client) capture(m *api.Capture) (api.Message, []int, error) {
	d := h.d
	e := d.Engine()
	if e == nil {
		return nil, nil, fmt.Errorf("capture: no datapath: %w", flow.ErrNotSupported)
	}
	if h.capStop != nil {
		return nil, nil, fmt.Errorf("capture: this connection captures already: %w", flow.ErrInvalidValue)
	}
	f := datapath.CaptureFilter{App: m.App, Reason: m.Reason, Snaplen: int(m.Snaplen)}
	switch {
	case m.Listener != 0 && m.Session != 0:
		return nil, nil, fmt.Errorf("capture: a listener or a session, not both: %w", flow.ErrInvalidValue)
	case m.Listener != 0:
		f.Handle = m.Listener
	default:
		f.Handle = m.Session
	}
	if m.Reason != "" && m.Reason != "any" && !slices.Contains(datapath.CaptureReasons(), m.Reason) {
		return nil, nil, fmt.Errorf("capture: no drop reason %q (want any or one of %s): %w", m.Reason,
			strings.Join(datapath.CaptureReasons(), ", "), flow.ErrInvalidValue)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("capture: pipe: %w", err)
	}
	// The write end is non-blocking, so that a write deadline bounds a
	// reader that stops reading.
	if err := unix.SetNonblock(p[1], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, fmt.Errorf("capture: pipe: %w", err)
	}
	_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20) // room for bursts; the default stays otherwise
	wf := os.NewFile(uintptr(p[1]), "capture")
	c, err := e.StartCapture(f)
	if err != nil {
		unix.Close(p[0])
		wf.Close()
		return nil, nil, err
	}
	h.sent = append(h.sent, p[0]) // closed once the reply is sent
	stop := make(chan struct{})
	h.capStop = stop
	d.capWG.Add(1)
	go func() {
		defer d.capWG.Done()
		n, err := d.writeCapture(e, c, wf, m, stop)
		e.StopCapture(c)
		wf.Close()
		d.log.Info("capture ended", "conn", h.id, "frames", n, "lost", c.Lost(), "err", err)
	}()
	return &api.CaptureReply{}, []int{p[0]}, nil
}

// writeCapture drains c into w as a capture stream (capstream.go) until
// it should end; it returns the frames written. It allocates nothing per
// frame, so that a capture does not add garbage-collector work to the
// process the workers run in.
func (d *Daemon) writeCapture(e *datapath.Engine, c *datapath.Capture, w *os.File, m *api.Capture, stop <-chan struct{}) (int, error) {
	queues := c.Queues()
	if len(queues) == 0 {
		return 0, errors.New("no queue to capture")
	}
	w.SetWriteDeadline(time.Now().Add(captureStall))
	sw := newStreamWriter(w)
	if err := sw.header(streamHeader{Snaplen: uint32(c.Snaplen()), Iface: d.cfg.Datapath.IfName,
		Version: d.cfg.Version, Queues: queues}); err != nil {
		return 0, err
	}
	var deadline <-chan time.Time
	if m.Duration > 0 {
		t := time.NewTimer(time.Duration(m.Duration) * time.Millisecond)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(capturePoll)
	defer tick.Stop()
	n := 0
	var werr error
	drain := func() {
		c.Read(func(r *datapath.CaptureRecord) bool {
			if m.Count > 0 && n >= int(m.Count) {
				return false
			}
			if werr = sw.frame(r); werr != nil {
				return false
			}
			n++
			return true
		})
	}
	done := false
	for !done && werr == nil {
		select {
		case <-stop:
			done = true
		case <-deadline:
			done = true
		case <-tick.C:
		}
		w.SetWriteDeadline(time.Now().Add(captureStall))
		drain()
		if m.Count > 0 && n >= int(m.Count) {
			done = true
		}
		if werr == nil {
			werr = sw.flush()
		}
	}
	e.StopCapture(c)
	if werr != nil {
		return n, werr
	}
	if m.Count == 0 || n < int(m.Count) {
		drain() // what the rings held when the capture stopped
	}
	lost := make([]uint64, len(queues))
	for i, q := range queues {
		lost[i] = c.QueueLost(q)
	}
	if err := sw.end(lost); err != nil {
		return n, err
	}
	return n, sw.flush()
}
