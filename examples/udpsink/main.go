package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/examples/internal/attach"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "udpsink:", err)
		os.Exit(1)
	}
}

func run() error {
	af := attach.Register(flag.CommandLine, "udpsink",
		"udpsink receives UDP datagrams on a listener of xsessiond with the zero-copy batch API\n"+
			"(ReadBatch), counts them and reports the rate every --interval, and the totals when it stops\n"+
			"(--duration, SIGINT or SIGTERM).")
	af.FifoSize = attach.DatagramFifoSize
	listen := flag.String("listen", "udp://0.0.0.0:9001", attach.ListenUsage("udp", "receive on"))
	interval := flag.Duration("interval", time.Second, "how often to report the rate")
	duration := flag.Duration("duration", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	batch := flag.Int("batch", 64, "datagrams per ReadBatch")
	flag.Parse()
	if err := attach.CheckArgs(flag.CommandLine, *listen, "udp"); err != nil {
		return err
	}
	if *batch < 1 || *interval <= 0 || *duration < 0 {
		return fmt.Errorf("--batch must be 1 or more, --interval positive and --duration 0 or more")
	}
	a, ctx, stop, err := af.Attach()
	if err != nil {
		return err
	}
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	pc, err := a.ListenPacketConn(*listen)
	if err != nil {
		return err
	}
	fmt.Printf("udpsink: receiving on %s (app %d)\n", pc.LocalAddr(), a.Index())
	go func() {
		// A read waiting for its deadline (--interval) ends at once.
		<-ctx.Done()
		pc.Close()
	}()
	msgs := make([]app.Message, *batch)
	var pkts, bytes, lastPkts, lastBytes uint64
	start := time.Now()
	last := start
	report := func(now time.Time, final bool) {
		dt := now.Sub(last).Seconds()
		if final {
			dt = now.Sub(start).Seconds()
			lastPkts, lastBytes = 0, 0
		}
		if dt <= 0 {
			return
		}
		pps := float64(pkts-lastPkts) / dt
		bps := float64(bytes-lastBytes) * 8 / dt
		what := "rate"
		if final {
			what = "total"
		}
		fmt.Printf("udpsink: %s: %d datagrams, %d bytes, %.0f datagrams/s, %.1f Mbit/s\n", what, pkts, bytes, pps, bps/1e6)
		last, lastPkts, lastBytes = now, pkts, bytes
	}
	for {
		pc.SetReadDeadline(time.Now().Add(*interval))
		n, err := pc.ReadBatch(msgs)
		for i := range msgs[:n] {
			bytes += uint64(msgs[i].Len())
		}
		pkts += uint64(n)
		if now := time.Now(); now.Sub(last) >= *interval {
			report(now, false)
		}
		if ctx.Err() != nil {
			report(time.Now(), true)
			return nil
		}
		if err != nil && !os.IsTimeout(err) {
			return af.Gone(a, err)
		}
	}
}
