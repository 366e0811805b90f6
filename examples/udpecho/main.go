package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/xsessiond/xsessiond/examples/internal/attach"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
}

func run() error {
	flags := attach.Register(flag.CommandLine, "udpecho",
		"udpecho echoes every UDP datagram it receives on a listener of xsessiond back to its sender,\n"+
			"of any size UDP carries (0 to 65,507 bytes over IPv4, 65,527 over IPv6). SIGINT or SIGTERM stops it.")
	flags.FifoSize = attach.DatagramFifoSize
	listen := flag.String("listen", "udp://0.0.0.0:9000", attach.ListenUsage("udp", "echo on"))
	flag.Parse()
	if err := attach.CheckArgs(flag.CommandLine, *listen, "udp"); err != nil {
		return err
	}
	a, ctx, stop, err := flags.Attach()
	if err != nil {
		return err
	}
	defer stop()
	pc, err := a.ListenPacket(*listen)
	if err != nil {
		return err
	}
	fmt.Printf("udpecho: echoing on %s (app %d)\n", pc.LocalAddr(), a.Index())
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	buf := make([]byte, 65536)
	var echoed uint64
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Printf("udpecho: stopped after %d datagrams\n", echoed)
				return nil
			}
			return flags.Gone(a, err)
		}
		if _, err := pc.WriteTo(buf[:n], addr); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return flags.Gone(a, err)
			}
			fmt.Fprintf(os.Stderr, "udpecho: reply to %v: %v\n", addr, err)
			continue
		}
		echoed++
	}
}
