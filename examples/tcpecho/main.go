package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/xsessiond/xsessiond/examples/internal/attach"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tcpecho:", err)
		os.Exit(1)
	}
}

func run() error {
	flags := attach.Register(flag.CommandLine, "tcpecho")
	listen := flag.String("listen", "tcp://0.0.0.0:7000", "the TCP endpoint to echo on")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	a, ctx, stop, err := flags.Attach()
	if err != nil {
		return err
	}
	defer stop()
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
			return flags.Gone(a, err)
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
