package daemon

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

// ctl capture: the daemon answers a Capture request with the read end of
// a pipe and writes a pcapng stream into its write end: a section header,
// two interfaces per queue (IF:qN:rx, then IF:qN:tx, so interface 2N is
// queue N's rx), one enhanced packet block per frame with the direction
// flag and a comment ("q0 rx handle 0x… app 1", "q0 rx drop no_session"),
// and at the end an interface statistics block per rx interface whose
// dropped count is the frames of that queue the capture ring had no room
// for. A pipe keeps frames off the control socket, whose records stay
// small, and lets tcpdump -r - read what the CLI copies through.
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
		return nil, nil, fmt.Errorf("capture: no drop reason %q: %w", m.Reason, flow.ErrInvalidValue)
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

// writeCapture drains c into w as pcapng until it should end; it returns
// the frames written.
func (d *Daemon) writeCapture(e *datapath.Engine, c *datapath.Capture, w *os.File, m *api.Capture, stop <-chan struct{}) (int, error) {
	snap := uint32(c.Snaplen())
	ifname := d.cfg.Datapath.IfName
	queues := c.Queues()
	idx := map[[2]int]int{}
	intf := func(q, dir int) pcapgo.NgInterface {
		dn := "rx"
		if dir == datapath.CaptureTx {
			dn = "tx"
		}
		return pcapgo.NgInterface{Name: fmt.Sprintf("%s:q%d:%s", ifname, q, dn), OS: runtime.GOOS,
			LinkType: layers.LinkTypeEthernet, SnapLength: snap, TimestampResolution: 9,
			Description: fmt.Sprintf("xsessiond queue %d, %s", q, dn)}
	}
	if len(queues) == 0 {
		return 0, errors.New("no queue to capture")
	}
	w.SetWriteDeadline(time.Now().Add(captureStall))
	ng, err := pcapgo.NewNgWriterInterface(w, intf(queues[0], datapath.CaptureRx), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{Hardware: runtime.GOARCH, OS: runtime.GOOS, Application: "xsessiond " + d.cfg.Version}})
	if err != nil {
		return 0, err
	}
	idx[[2]int{queues[0], datapath.CaptureRx}] = 0
	for i, q := range queues {
		for dir := datapath.CaptureRx; dir <= datapath.CaptureTx; dir++ {
			if i == 0 && dir == datapath.CaptureRx {
				continue
			}
			id, err := ng.AddInterface(intf(q, dir))
			if err != nil {
				return 0, err
			}
			idx[[2]int{q, dir}] = id
		}
	}
	if err := ng.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
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
	in, out := &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}, &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
	// The comments, made once per queue, direction and session or drop
	// reason, not once per frame.
	type commentKey struct {
		q, dir int
		h      flow.Handle
		app    uint32
		reason string
	}
	cache := map[commentKey][]string{}
	drain := func() {
		c.Read(func(r *datapath.CaptureRecord) bool {
			if m.Count > 0 && n >= int(m.Count) {
				return false
			}
			dir, flags := "rx", in
			if r.Dir == datapath.CaptureTx {
				dir, flags = "tx", out
			}
			k := commentKey{r.Queue, r.Dir, r.Handle, r.App, r.Reason}
			comments := cache[k]
			if comments == nil {
				if len(cache) >= 4096 {
					clear(cache)
				}
				if r.Reason != "" {
					comments = []string{fmt.Sprintf("q%d %s drop %s", r.Queue, dir, r.Reason)}
				} else {
					comments = []string{fmt.Sprintf("q%d %s handle %#x app %d", r.Queue, dir, uint64(r.Handle), r.App)}
				}
				cache[k] = comments
			}
			ci := gopacket.CaptureInfo{Timestamp: r.Time, CaptureLength: len(r.Data), Length: r.Len,
				InterfaceIndex: idx[[2]int{r.Queue, r.Dir}]}
			if werr = ng.WritePacketWithOptions(ci, r.Data, pcapgo.NgPacketOptions{Comments: comments, Flags: flags}); werr != nil {
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
			werr = ng.Flush()
		}
	}
	e.StopCapture(c)
	if werr != nil {
		return n, werr
	}
	if m.Count == 0 || n < int(m.Count) {
		drain() // what the rings held when the capture stopped
	}
	end := time.Now()
	for _, q := range queues {
		st := pcapgo.NgInterfaceStatistics{LastUpdate: end, StartTime: start, EndTime: end,
			PacketsReceived: pcapgo.NgNoValue64, PacketsDropped: c.QueueLost(q)}
		if werr = ng.WriteInterfaceStats(idx[[2]int{q, datapath.CaptureRx}], st); werr != nil {
			return n, werr
		}
	}
	return n, ng.Flush()
}
