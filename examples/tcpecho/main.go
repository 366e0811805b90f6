package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tcpecho:", err)
		os.Exit(1)
	}
}

func run() error {
	socket := flag.String("socket", app.DefaultSocket, "the daemon's control socket")
	ns := flag.String("ns", "", "the app namespace to attach to (default: the default namespace)")
	secret := flag.String("secret", "0", "the namespace's secret")
	listen := flag.String("listen", "tcp://0.0.0.0:7000", "the TCP endpoint to echo on")
	name := flag.String("name", "tcpecho", "the app's name in the daemon")
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
	ln, err := a.Listen(*listen)
	if err != nil {
		return err
	}
	fmt.Printf("tcpecho: echoing on %s (app %d)\n", ln.Addr(), a.Index())
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	var conns, bytes atomic.Uint64
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				fmt.Printf("tcpecho: stopped after %d connections, %d bytes\n", conns.Load(), bytes.Load())
				return nil
			}
			return err
		}
		conns.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			n, err := io.Copy(c, c)
			bytes.Add(uint64(n))
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "tcpecho: %v: %v\n", c.RemoteAddr(), err)
			}
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}()
	}
}
