package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/ctlview"
)

func newTopCmd(socket *string) *cobra.Command {
	var once bool
	var interval time.Duration
	var rows int
	cmd := &cobra.Command{
		Use:   "top [--once] [--interval D] [--sessions N]",
		Short: "A live view: per queue rx/tx pps and drops by reason, per app fifo fill and rates, busiest sessions and listeners",
		Long: `A live view of the daemon, refreshed every --interval (1s): per queue the
received and sent packets per second and the drops per second by reason,
per app its fifo fill and packet rates, and the --sessions (10) busiest
sessions and listeners. q or Ctrl-C leaves and gives the terminal back as
it was.

With --once (or when the output is not a terminal) it takes two samples
--interval apart, prints one frame of plain text and exits: for scripts.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return usagef("--interval %v: want a positive duration", interval)
			}
			if rows < 0 {
				return usagef("--sessions %d: want 0 or more (the busiest sessions and listeners shown)", rows)
			}
			return runTop(cmd, *socket, once, interval, rows)
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between refreshes (and the rates' window)")
	cmd.Flags().IntVar(&rows, "sessions", 10, "busiest sessions and listeners shown, together")
	return cmd
}

func runTop(cmd *cobra.Command, socket string, once bool, interval time.Duration, rows int) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	cl, err := api.DialClient(dctx, socket, api.ClientOptions{Name: "ctl top"})
	cancel()
	if err != nil {
		return ctlError(err, socket)
	}
	defer cl.Close()
	// An --interval longer than the daemon's control.idle_timeout would
	// leave the connection idle between samples.
	defer keepAlive(cl)()
	src := ctlview.NewSource(cl, ctlTimeout, func(err error) error { return ctlError(err, socket) })
	out := cmd.OutOrStdout()
	f, isFile := out.(*os.File)
	if once || !isFile || !term.IsTerminal(int(f.Fd())) {
		return ctlview.TopOnce(ctx, src, out, interval, rows)
	}
	return ctlview.TopLoop(ctx, src, f, os.Stdin, interval, rows)
}
