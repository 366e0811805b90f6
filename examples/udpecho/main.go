package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
}

func run() error {
	socket := flag.String("socket", app.DefaultSocket, "the daemon's control socket")
	ns := flag.String("ns", "", "the app namespace to attach to (default: the default namespace)")
	secret := flag.String("secret", "0", "the namespace's secret")
	listen := flag.String("listen", "udp://0.0.0.0:9000", "the UDP endpoint to echo on")
	name := flag.String("name", "udpecho", "the app's name in the daemon")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	sec, err := strconv.ParseUint(*secret, 0, 64)
	if err != nil {
		return fmt.Errorf("--secret %q: want a number (0 to 2^64-1)", *secret)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err := app.Attach(actx, app.Options{Socket: *socket, Name: *name, Namespace: *ns, Secret: sec})
	cancel()
	if err != nil {
		return err
	}
	defer a.Close()
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
			return err
		}
		if _, err := pc.WriteTo(buf[:n], addr); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			fmt.Fprintf(os.Stderr, "udpecho: reply to %v: %v\n", addr, err)
			continue
		}
		echoed++
	}
}
