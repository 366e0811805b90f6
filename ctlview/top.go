package ctlview

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
)

// The escapes the top screen draws with: the alternate screen (the terminal's
// own contents come back on exit), cursor hidden, home and clear.
const (
	EscEnterAlt = "\x1b[?1049h\x1b[?25l"
	EscLeaveAlt = "\x1b[?25h\x1b[?1049l"
	escHome     = "\x1b[H\x1b[2J"
)

// topSample is what one refresh reads from the daemon.
type topSample struct {
	at        time.Time
	stats     daemon.StatsView
	apps      []daemon.AppView
	sessions  []daemon.SessionView
	listeners []daemon.ListenerView
}

// Source reads the samples of the top screen over one control connection.
type Source struct {
	cl      *api.Client
	timeout time.Duration
	callErr func(error) error
}

// NewSource reads samples over cl; each request gets timeout, and callErr
// words the errors of a failed call for people.
func NewSource(cl *api.Client, timeout time.Duration, callErr func(error) error) *Source {
	return &Source{cl: cl, timeout: timeout, callErr: callErr}
}

func (s *Source) show(ctx context.Context, what api.ShowWhat, v any) error {
	doc, err := s.cl.ShowAll(ctx, what, s.timeout)
	if err != nil {
		return s.callErr(err)
	}
	if err := json.Unmarshal(doc, v); err != nil {
		return fmt.Errorf("show %v: the daemon sent bad JSON: %w", what, err)
	}
	return nil
}

func (s *Source) sample(ctx context.Context) (*topSample, error) {
	t := &topSample{at: time.Now()}
	if err := s.show(ctx, api.ShowStats, &t.stats); err != nil {
		return nil, err
	}
	if err := s.show(ctx, api.ShowApps, &t.apps); err != nil {
		return nil, err
	}
	if err := s.show(ctx, api.ShowSessions, &t.sessions); err != nil {
		return nil, err
	}
	if err := s.show(ctx, api.ShowListeners, &t.listeners); err != nil {
		return nil, err
	}
	return t, nil
}

// TopOnce takes two samples interval apart and writes one frame of plain
// text to out, with the rows busiest sessions.
func TopOnce(ctx context.Context, src *Source, out io.Writer, interval time.Duration, rows int) error {
	prev, err := src.sample(ctx)
	if err != nil {
		return err
	}
	select {
	case <-time.After(interval):
	case <-ctx.Done():
		return nil
	}
	cur, err := src.sample(ctx)
	if err != nil {
		return err
	}
	_, err = out.Write(drawTop(prev, cur, rows, 0, 0))
	return err
}

// TopLoop draws on the terminal f every interval until q, Ctrl-C or
// Ctrl-D on in (when in is a terminal), the end of ctx or an error, and
// restores the terminal on every way out.
func TopLoop(ctx context.Context, src *Source, f, in *os.File, interval time.Duration, rows int) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if term.IsTerminal(int(in.Fd())) {
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("top: raw mode: %w", err)
		}
		defer term.Restore(int(in.Fd()), old)
		// Keys: q, Q, Ctrl-C (raw mode turns it into a byte) and Ctrl-D.
		go func() {
			b := make([]byte, 16)
			for {
				n, err := in.Read(b)
				if err != nil {
					cancel()
					return
				}
				if bytes.ContainsAny(b[:n], "qQ\x03\x04") {
					cancel()
					return
				}
			}
		}()
	}
	if _, err := io.WriteString(f, EscEnterAlt); err != nil {
		return err
	}
	defer io.WriteString(f, EscLeaveAlt)
	prev, err := src.sample(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	first := true
	for {
		cur := prev
		if !first {
			if cur, err = src.sample(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		w, h, err := term.GetSize(int(f.Fd()))
		if err != nil {
			w, h = 0, 0
		}
		frame := drawTop(prev, cur, rows, w, h)
		frame = bytes.ReplaceAll(frame, []byte("\n"), []byte("\r\n"))
		if _, err := f.Write(append([]byte(escHome), frame...)); err != nil {
			return err
		}
		if !first {
			prev = cur
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// rate is (b - a) per second over d; a counter that went back (clear
// stats) counts from zero.
func rate(a, b uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	if b < a {
		a = 0
	}
	return float64(b-a) / d.Seconds()
}

// drawTop renders one frame from two samples; width and height (0:
// unbounded) clip it to the terminal.
func drawTop(prev, cur *topSample, rows, width, height int) []byte {
	var b bytes.Buffer
	d := cur.at.Sub(prev.at)
	st := &cur.stats
	iface := cell(st.Interface)
	if s := st.InterfaceState; s != "" && s != "up" {
		iface += " (" + strings.ToUpper(s) + ")"
	}
	fmt.Fprintf(&b, "xsessiond %s on %s  datapath %s%s  workers %d  apps %d  sessions %d  listeners %d  up %s\n",
		cell(st.Version), iface, st.Datapath, xdpMode(st.XDPMode), st.Workers, st.Apps, st.Sessions, st.Listeners,
		(time.Duration(st.UptimeSeconds) * time.Second).String())
	if x := st.XDP; len(x) > 0 {
		px := prev.stats.XDP
		fmt.Fprintf(&b, "xdp program: pass %.0f/s  redirect %.0f/s  malformed %.0f/s\n",
			rate(px["pass"], x["pass"], d), rate(px["redirect"], x["redirect"], d), rate(px["malformed"], x["malformed"], d))
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tRX PPS\tTX PPS\tDELIVERED/S\tDROPS/S\tDROPS BY REASON (/s)")
	pq := map[int]daemon.QueueStats{}
	for _, q := range prev.stats.Queues {
		pq[q.Queue] = q
	}
	for _, q := range st.Queues {
		p := pq[q.Queue]
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.0f\t%.0f\t%s\n", q.Queue, rate(p.RxPackets, q.RxPackets, d), rate(p.Sent(), q.Sent(), d),
			rate(p.Delivered, q.Delivered, d), rate(p.Dropped, q.Dropped, d), reasonRates(p.Drops, q.Drops, d))
	}
	tw.Flush()

	// Per app: fifo fill and the rates of its sessions and listeners.
	type counts struct{ rx, tx uint64 }
	// A row is its handle and its ends: a connection lingering after its
	// app closed it is listed beside the session that took its handle
	// since.
	type rowKey struct {
		h             daemon.Handle
		local, remote string
	}
	byHandle := func(s *topSample) map[rowKey]counts {
		m := map[rowKey]counts{}
		for _, x := range s.sessions {
			m[rowKey{x.Handle, x.Local, x.Remote}] = counts{x.RxPackets, x.TxPackets}
		}
		for _, x := range s.listeners {
			m[rowKey{h: x.Handle}] = counts{x.RxPackets, x.TxPackets}
		}
		return m
	}
	ph, ch := byHandle(prev), byHandle(cur)
	type busy struct {
		h         daemon.Handle
		app       uint32
		what      string
		rx, tx    float64
		fifo      string
		drops     uint64
		dropNames string
	}
	var all []busy
	appRx, appTx := map[uint32]float64{}, map[uint32]float64{}
	add := func(k rowKey, app uint32, what, fifo string, dr map[string]uint64, dropped uint64) {
		h := k.h
		c, p := ch[k], ph[k]
		x := busy{h: h, app: app, what: what, rx: rate(p.rx, c.rx, d), tx: rate(p.tx, c.tx, d), fifo: fifo, drops: dropped,
			dropNames: dropsString(dr)}
		appRx[app] += x.rx
		appTx[app] += x.tx
		all = append(all, x)
	}
	for _, s := range cur.sessions {
		what := s.Transport + " " + s.Local + " > " + s.Remote
		if s.State == "cut-through" {
			what += " (cut-through)"
		}
		add(rowKey{s.Handle, s.Local, s.Remote}, s.App, what, fifoString(s.RxFifoUsed, s.RxFifoSize)+" "+fifoString(s.TxFifoUsed, s.TxFifoSize), s.Drops, s.Dropped)
	}
	for _, l := range cur.listeners {
		if l.Table == "local" {
			continue // the global listener of the same bind carries the traffic
		}
		fifo := fifoString(l.RxFifoUsed, l.RxFifoSize) + " -"
		if l.TCP != nil {
			fifo = "accept " + acceptQueue(l.TCP)
		}
		add(rowKey{h: l.Handle}, l.App, "listen "+cell(l.URI), fifo, l.Drops, l.Dropped)
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tNAME\tNAMESPACE\tSESSIONS\tFIFO USED/SIZE\tFILL\tRX PPS\tTX PPS")
	for _, a := range cur.apps {
		fillPct := 0.0
		if a.FifoSize > 0 {
			fillPct = 100 * float64(a.FifoUsed) / float64(a.FifoSize)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d/%d\t%.1f%%\t%.0f\t%.0f\n", a.ID, cell(a.Name), cell(a.Namespace), a.Sessions, a.FifoUsed, a.FifoSize,
			fillPct, appRx[a.ID], appTx[a.ID])
	}
	tw.Flush()

	slices.SortStableFunc(all, func(x, y busy) int {
		switch {
		case x.rx+x.tx > y.rx+y.tx:
			return -1
		case x.rx+x.tx < y.rx+y.tx:
			return 1
		}
		return 0
	})
	if len(all) > max(rows, 0) {
		all = all[:max(rows, 0)]
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HANDLE\tAPP\tSESSION\tRX PPS\tTX PPS\tFIFO RX TX\tDROPS")
	for _, x := range all {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.0f\t%s\t%s\n", x.h, x.app, x.what, x.rx, x.tx, x.fifo, x.dropNames)
	}
	tw.Flush()
	return clip(b.Bytes(), width, height)
}

// reasonRates prints the drop reasons that grew, with their rates.
func reasonRates(prev, cur map[string]uint64, d time.Duration) string {
	var parts []string
	for k, v := range cur {
		if r := rate(prev[k], v, d); r > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.0f", k, r))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// clip cuts frame to width columns and height lines (0: no limit). A
// column is a character, not a byte: a name in UTF-8 is cut between its
// characters, never inside one.
func clip(frame []byte, width, height int) []byte {
	if width <= 0 && height <= 0 {
		return frame
	}
	lines := strings.Split(strings.TrimRight(string(frame), "\n"), "\n")
	if height > 0 && len(lines) > height {
		lines = lines[:height]
	}
	for i, l := range lines {
		if width <= 0 || len(l) <= width {
			continue
		}
		n := 0
		for j := range l {
			if n == width {
				lines[i] = l[:j]
				break
			}
			n++
		}
	}
	return []byte(strings.Join(lines, "\n"))
}
