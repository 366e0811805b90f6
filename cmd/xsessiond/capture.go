package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/ctlview"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

func newCaptureCmd(socket *string) *cobra.Command {
	var file, listener, session, reason string
	var count, app, snaplen uint32
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "capture -w FILE|- [-c COUNT] [--duration D] [--listener H] [--session H] [--app ID] [--reason R] [--snaplen N]",
		Short: "Write the frames the datapath receives and sends to a pcapng file",
		Long: `Capture the frames the daemon's datapath receives (after the XDP program
steered them: bound sessions' traffic) and sends, both directions, as
pcapng: one interface per queue and direction (IF:qN:rx, IF:qN:tx), and
on each frame a comment with its queue, direction, handle and app, or its
drop reason. TCP frames carry no handle or app: a capture filtered by
listener, session or app leaves them out. -w - writes to stdout:

  xsessiond ctl capture -w - -c 100 | tcpdump -r - -nn

The capture stops after -c frames, after --duration, or on Ctrl-C. It
costs the datapath nothing when off; when on, frames the capture ring has
no room for are counted (shown at the end and in the pcapng interface
statistics), never waited for.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("capture needs -w FILE (or -w - for stdout)")
			}
			if err := checkCaptureFile(file); err != nil {
				return err
			}
			if err := ctlview.ValueFits("--reason", reason, api.MaxCaptureReasonLen, "a drop reason", `ctl show stats names the drop reasons; "any" is every one`); err != nil {
				return usage(err)
			}
			m := &api.Capture{App: app, Reason: reason, Count: count, Snaplen: snaplen}
			if duration < 0 || duration > time.Duration(1<<32-1)*time.Millisecond {
				return usagef("--duration %v: want 0 (no limit) or a positive duration of at most %v", duration, time.Duration(1<<32-1)*time.Millisecond)
			}
			m.Duration = uint32(duration / time.Millisecond)
			if duration > 0 && m.Duration == 0 {
				m.Duration = 1
			}
			var err error
			if m.Listener, err = parseHandle("--listener", listener); err != nil {
				return usage(err)
			}
			if m.Session, err = parseHandle("--session", session); err != nil {
				return usage(err)
			}
			return runCapture(cmd, *socket, m, file)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "write", "w", "", "the pcapng file to write; - for stdout")
	fl.Uint32VarP(&count, "count", "c", 0, "stop after this many frames (0: no limit)")
	fl.DurationVar(&duration, "duration", 0, "stop after this long (0: no limit)")
	fl.StringVar(&listener, "listener", "", "only the frames of this listener (a handle, see ctl show listeners)")
	fl.StringVar(&session, "session", "", "only the frames of this session (a handle, see ctl show sessions)")
	fl.Uint32Var(&app, "app", 0, "only the frames of this app's listeners and sessions")
	fl.StringVar(&reason, "reason", "", `only frames dropped for this reason (as show stats names it, e.g. no_session), or "any" drop`)
	fl.Uint32Var(&snaplen, "snaplen", 0, fmt.Sprintf("bytes kept of each frame (0: as many as the interface's MTU allows); more than %d are cut to %d", datapath.MaxCaptureLen, datapath.MaxCaptureLen))
	return cmd
}

// checkCaptureFile says, before the capture starts, when -w names a
// directory or a file in a directory that does not exist.
func checkCaptureFile(file string) error {
	if file == "-" {
		return nil
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		return fmt.Errorf("capture -w %s: a directory: give a file name, like %s", file, filepath.Join(file, "capture.pcapng"))
	}
	dir := filepath.Dir(file)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("capture -w %s: no directory %s: give a file in one that exists, or -w - for stdout", file, dir)
	}
	return nil
}

// parseHandle reads a --listener or --session handle as show listeners
// and show sessions print one, in hex after 0x, or in decimal digits, as
// --secret takes a number (api.ParseSecret): Go's number syntax (1_000,
// 0b1, 0o7, and 010 read as octal 8) is refused, not read as another
// handle.
func parseHandle(flag, s string) (flow.Handle, error) {
	if s == "" {
		return 0, nil
	}
	want := fmt.Sprintf("want a handle as ctl show listeners or sessions lists it, in hex after 0x like 0x7ffffffd00000000 (ctl show %ss)", strings.TrimPrefix(flag, "--"))
	v, err := api.ParseSecret(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s %q: %s", flag, s, want)
	case v == 0:
		return 0, fmt.Errorf("%s %q: 0 is no handle (the daemon gives none): %s", flag, s, want)
	}
	return flow.Handle(v), nil
}

func runCapture(cmd *cobra.Command, socket string, m *api.Capture, file string) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "ctl capture"})
	if err != nil {
		cancel()
		return ctlError(err, socket)
	}
	defer cl.Close()
	start := time.Now() // before the daemon's --duration starts
	rep, fds, err := cl.Call(ctx, m)
	cancel()
	if err != nil {
		api.CloseFDs(fds)
		if m.Reason != "" {
			return withHint(ctlError(err, socket), flow.ErrInvalidValue, `ctl show stats names the drop reasons; "any" is every one`)
		}
		return ctlError(err, socket)
	}
	if _, ok := rep.(*api.CaptureReply); !ok || len(fds) != 1 {
		api.CloseFDs(fds)
		return fmt.Errorf("capture: the daemon answered %v", rep.Type())
	}
	pipe := os.NewFile(uintptr(fds[0]), "capture")
	defer pipe.Close()
	// A filter naming what is not there captures nothing (unless it
	// comes): say so at once rather than only "0 frames captured" at the
	// end. Checked once the daemon took the request, so that one who may
	// not capture hears that first.
	if err := captureFiltersExist(cmd.Context(), cl, socket, m); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "xsessiond: warning: %v\n", err)
	}

	var out io.Writer = cmd.OutOrStdout()
	if file != "-" {
		// Only its owner may read it: it holds every app's payloads,
		// which only an admin may capture.
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("capture -w %s: %w: give a file you may write, or -w - for stdout", file, errors.Unwrap(err))
		}
		defer f.Close()
		out = f
	}
	// Ctrl-C: close the control connection; the daemon then ends the
	// stream cleanly (the last block whole) and closes the pipe.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	stopped, interrupted := make(chan struct{}), make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-sig:
			close(interrupted)
			cl.Close()
		case <-stopped:
		}
	}()

	// The daemon sends a compact stream; pcapng is made here, out of the
	// daemon's process.
	res, err := daemon.CaptureToPcapng(pipe, out)
	if err != nil {
		return fmt.Errorf("capture: after %d frames: %w", res.Frames, err)
	}
	if f, ok := out.(*os.File); ok && file != "-" {
		if err := f.Close(); err != nil {
			return fmt.Errorf("capture: %w", err)
		}
	}
	n, lost := res.Frames, res.Lost
	if !res.Ended {
		return fmt.Errorf("capture: the daemon's stream stopped after %d frames without its end (did the daemon stop?)", n)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d frames captured, %d lost (capture ring full)\n", n, lost)
	// Neither Ctrl-C, -c nor --duration: the daemon ended the capture,
	// as it does when it stops.
	select {
	case <-interrupted:
		return nil
	default:
	}
	if (m.Count == 0 || uint32(n) < m.Count) && (m.Duration == 0 || time.Since(start) < time.Duration(m.Duration)*time.Millisecond) {
		return fmt.Errorf("capture: the daemon ended the capture after %d frames, before -c or --duration: did it stop? (its log says why)", n)
	}
	return nil
}

// captureFiltersExist says when the app, listener or session a capture
// is filtered by is not one the daemon has.
func captureFiltersExist(ctx context.Context, cl *api.Client, socket string, m *api.Capture) error {
	type row struct {
		ID     *uint32 `json:"id"`
		Handle string  `json:"handle"`
	}
	rows := func(what api.ShowWhat, name string) ([]row, error) {
		doc, err := cl.ShowAll(ctx, what, ctlTimeout)
		if err != nil {
			return nil, ctlError(err, socket)
		}
		var out []row
		if err := json.Unmarshal(doc, &out); err != nil {
			return nil, fmt.Errorf("show %s: the daemon sent bad JSON: %w", name, err)
		}
		return out, nil
	}
	if m.App != 0 {
		apps, err := rows(api.ShowApps, "apps")
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(apps, func(r row) bool { return r.ID != nil && *r.ID == m.App }) {
			return fmt.Errorf("capture --app %d: no such app (ctl show apps lists them): the capture sees nothing of it unless it attaches", m.App)
		}
	}
	for _, f := range []struct {
		h          flow.Handle
		what       api.ShowWhat
		flag, name string
	}{{m.Listener, api.ShowListeners, "--listener", "listener"}, {m.Session, api.ShowSessions, "--session", "session"}} {
		if f.h == 0 {
			continue
		}
		list, err := rows(f.what, f.name+"s")
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(list, func(r row) bool {
			v, err := strconv.ParseUint(r.Handle, 0, 64)
			return err == nil && flow.Handle(v) == f.h
		}) {
			return fmt.Errorf("capture %s %#x: no such %s (ctl show %ss lists them, with their handles): the capture sees nothing of it", f.flag, uint64(f.h), f.name, f.name)
		}
	}
	return nil
}
