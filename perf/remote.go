package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/perf/internal/gen"
)

// The remote modes split the rig over two machines: `perf gen` on the
// generator, `perf recv` on the device under test. Each reports its own
// side once a second; loss is the generator's sent count minus the
// receiver's delivered count, read off the two outputs.

// ifaceInfo finds an interface and its first IPv4 address in the current
// network namespace.
func ifaceInfo(name string) (idx int, mac net.HardwareAddr, addr netip.Addr, queues int, err error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, nil, addr, 0, fmt.Errorf("find %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil {
		return 0, nil, addr, 0, fmt.Errorf("addresses of %s: %w", name, err)
	}
	if len(addrs) > 0 {
		addr, _ = netip.AddrFromSlice(addrs[0].IP.To4())
	}
	a := l.Attrs()
	return a.Index, a.HardwareAddr, addr, max(1, a.NumRxQueues), nil
}

func remoteGenMain(args []string) int {
	fs := flag.NewFlagSet("perf gen", flag.ContinueOnError)
	var o remoteGenOpts
	fs.StringVar(&o.iface, "iface", "", "interface to send on (required)")
	fs.StringVar(&o.gen, "gen", genPacket, "generator: packet (an AF_PACKET transmit ring: socket buffers through the\ninterface's driver) or xdp (XDP frames from test runs of an XDP program, handed to the\ndriver's XDP transmit: needs a driver with one, on a veth an XDP program or GRO on the peer)")
	dstMAC := fs.String("dst-mac", "", "MAC address of the receiver's interface (required)")
	dstIP := fs.String("dst-ip", "", "IPv4 address of the receiver (required)")
	srcIP := fs.String("src-ip", "", "source IPv4 address (default: the interface's first)")
	port := fs.Uint("port", defaultPort, "UDP destination port")
	fs.IntVar(&o.payload, "payload", 64, "UDP payload bytes")
	fs.IntVar(&o.flows, "flows", 16, "flows (UDP source ports)")
	fs.Uint64Var(&o.rate, "rate", 0, "packets per second; 0 = flat out")
	fs.DurationVar(&o.dur, "duration", 10*time.Second, "how long to send")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "perf gen:", err); return 1 }
	if o.iface == "" || *dstMAC == "" || *dstIP == "" || *port == 0 || *port > 65535 {
		fs.Usage()
		return 2
	}
	o.port = uint16(*port)
	var err error
	if *srcIP != "" {
		if o.src, err = netip.ParseAddr(*srcIP); err != nil {
			return fail(err)
		}
	}
	if o.dstMAC, err = net.ParseMAC(*dstMAC); err != nil {
		return fail(err)
	}
	if o.dst, err = netip.ParseAddr(*dstIP); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := remoteGen(ctx, o, os.Stdout); err != nil {
		return fail(err)
	}
	return 0
}

// remoteGenOpts are perf gen's settings.
type remoteGenOpts struct {
	iface, gen string
	dstMAC     net.HardwareAddr
	src, dst   netip.Addr // src invalid: the interface's first IPv4 address
	port       uint16
	payload    int
	flows      int
	rate       uint64
	dur        time.Duration
}

// remoteGen sends for o.dur (or until ctx is done) from the calling
// thread's network namespace, reporting to out once a second and at the
// end, and returns the frames sent. The XDP generator sends from the
// calling goroutine's thread.
func remoteGen(ctx context.Context, o remoteGenOpts, out io.Writer) (uint64, error) {
	if o.gen != genPacket && o.gen != genXDP {
		return 0, fmt.Errorf("--gen %q: want %s or %s", o.gen, genPacket, genXDP)
	}
	idx, mac, src, _, err := ifaceInfo(o.iface)
	if err != nil {
		return 0, err
	}
	if o.src.IsValid() {
		src = o.src
	}
	cfg := gen.Config{
		FrameSpec: gen.FrameSpec{SrcMAC: mac, DstMAC: o.dstMAC, SrcIP: src, DstIP: o.dst,
			SrcPortBase: 40000, DstPort: o.port, Flows: o.flows, Payload: o.payload},
		IfIndex: idx, Rate: o.rate,
	}
	var g generator
	if o.gen == genXDP {
		g, err = gen.NewXDP(cfg)
	} else {
		g, err = gen.New(cfg)
	}
	if err != nil {
		return 0, err
	}
	defer g.Close()
	dropped0, _ := txDropped(o.iface)
	ctx, cancel := context.WithTimeout(ctx, o.dur)
	defer cancel()
	report := everySecondTo(ctx, out, "sent", g.Sent)
	err = g.Run(ctx)
	cancel()
	report()
	if err != nil {
		return g.Sent(), err
	}
	sent := g.Sent()
	fmt.Fprintf(out, "sent %d frames of %d-byte payload in total (%d rejected)\n", sent, o.payload, g.Errors())
	if o.gen == genXDP {
		// The driver's XDP transmit counts what it could not send (a veth:
		// the peer's ring full, or no NAPI there) as dropped on transmit.
		if dropped1, err := txDropped(o.iface); err == nil {
			fmt.Fprintf(out, "%s tx_dropped +%d during the run (XDP frames the driver did not send)\n", o.iface, dropped1-dropped0)
		}
	}
	return sent, nil
}

// txDropped reads an interface's tx_dropped counter.
func txDropped(name string) (uint64, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	if st := l.Attrs().Statistics; st != nil {
		return st.TxDropped, nil
	}
	return 0, errors.New("no statistics")
}

func remoteRecvMain(args []string) int {
	fs := flag.NewFlagSet("perf recv", flag.ContinueOnError)
	iface := fs.String("iface", "", "interface the traffic arrives on (required)")
	impl := fs.String("impl", ImplKernel, "receiver: kernel, kernel-reuseport, xdp-drop or xsessiond")
	port := fs.Uint("port", defaultPort, "UDP port to receive on")
	queues := fs.Int("queues", 0, "sockets of kernel-reuseport (default: the interface's rx queues)")
	dur := fs.Duration("duration", 15*time.Second, "how long to receive")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "perf recv:", err); return 1 }
	if *iface == "" || *port == 0 || *port > 65535 {
		fs.Usage()
		return 2
	}
	idx, _, addr, nq, err := ifaceInfo(*iface)
	if err != nil {
		return fail(err)
	}
	if *queues > 0 {
		nq = *queues
	}
	rx, err := newReceiver(*impl, nq)
	if err != nil {
		return fail(err)
	}
	env := &Env{Do: func(fn func() error) error { return fn() }, IfName: *iface, IfIndex: idx,
		Addr: addr, Port: uint16(*port), Queues: nq}
	if err := rx.Start(env); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	report := everySecond(ctx, "delivered", rx.Delivered)
	<-ctx.Done()
	report()
	err = rx.Stop()
	fmt.Printf("delivered %d datagrams in total to %s on %s:%d\n", rx.Delivered(), *impl, addr, *port)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fail(err)
	}
	return 0
}

// everySecond prints, once a second until ctx is done, the rate of count
// and this machine's busy CPU time per counted packet. It returns a
// function that waits for the printer to finish.
func everySecond(ctx context.Context, what string, count func() uint64) func() {
	return everySecondTo(ctx, os.Stdout, what, count)
}

// everySecondTo is everySecond printing to out.
func everySecondTo(ctx context.Context, out io.Writer, what string, count func() uint64) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev, err := take(count, count, -1)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, err := take(count, count, -1)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return
			}
			rep, err := windowRep(prev, cur)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return
			}
			ns := "–"
			if v, ok := PerPacket(time.Duration(rep.BusyNs), rep.Delivered); ok {
				ns = fmt.Sprintf("%.0f", v)
			}
			fmt.Fprintf(out, "%s %s %10.3f Mpps  CPU %s ns/pkt  util %3.0f%%\n", cur.t.Format("15:04:05"), what,
				float64(rep.Delivered)/(float64(rep.WindowNs)/1e9)/1e6, ns, 100*rep.Util)
			prev = cur
		}
	}()
	return func() { <-done }
}
