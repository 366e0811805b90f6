package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	iface := fs.String("iface", "", "interface to send on (required)")
	dstMAC := fs.String("dst-mac", "", "MAC address of the receiver's interface (required)")
	dstIP := fs.String("dst-ip", "", "IPv4 address of the receiver (required)")
	srcIP := fs.String("src-ip", "", "source IPv4 address (default: the interface's first)")
	port := fs.Uint("port", defaultPort, "UDP destination port")
	payload := fs.Int("payload", 64, "UDP payload bytes")
	flows := fs.Int("flows", 16, "flows (UDP source ports)")
	rate := fs.Uint64("rate", 0, "packets per second; 0 = flat out")
	dur := fs.Duration("duration", 10*time.Second, "how long to send")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "perf gen:", err); return 1 }
	if *iface == "" || *dstMAC == "" || *dstIP == "" || *port == 0 || *port > 65535 {
		fs.Usage()
		return 2
	}
	idx, mac, src, _, err := ifaceInfo(*iface)
	if err != nil {
		return fail(err)
	}
	if *srcIP != "" {
		if src, err = netip.ParseAddr(*srcIP); err != nil {
			return fail(err)
		}
	}
	dmac, err := net.ParseMAC(*dstMAC)
	if err != nil {
		return fail(err)
	}
	dst, err := netip.ParseAddr(*dstIP)
	if err != nil {
		return fail(err)
	}
	g, err := gen.New(gen.Config{
		FrameSpec: gen.FrameSpec{SrcMAC: mac, DstMAC: dmac, SrcIP: src, DstIP: dst,
			SrcPortBase: 40000, DstPort: uint16(*port), Flows: *flows, Payload: *payload},
		IfIndex: idx, Rate: *rate,
	})
	if err != nil {
		return fail(err)
	}
	defer g.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	report := everySecond(ctx, "sent", g.Sent)
	if err := <-errc; err != nil {
		return fail(err)
	}
	report()
	fmt.Printf("sent %d frames of %d-byte payload in total (%d rejected)\n", g.Sent(), *payload, g.Errors())
	return 0
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
			fmt.Printf("%s %s %10.3f Mpps  CPU %s ns/pkt  util %3.0f%%\n", cur.t.Format("15:04:05"), what,
				float64(rep.Delivered)/(float64(rep.WindowNs)/1e9)/1e6, ns, 100*rep.Util)
			prev = cur
		}
	}()
	return func() { <-done }
}
