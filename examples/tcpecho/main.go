package main

import (
	"flag"
	"fmt"
	"io"
	"net"
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
	flags := attach.Register(flag.CommandLine, "tcpecho",
		"tcpecho echoes every byte of every TCP connection it accepts on a listener of xsessiond back to\n"+
			"its peer; a peer that closes its side (FIN) gets the rest back, then FIN. SIGINT or SIGTERM\n"+
			"closes every connection and stops it.")
	listen := flag.String("listen", "tcp://0.0.0.0:7000", attach.ListenUsage("tcp", "echo on"))
	flag.Parse()
	if err := attach.CheckArgs(flag.CommandLine, *listen, "tcp"); err != nil {
		return err
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
	// open holds the connections being echoed, closed when the example
	// stops (once stopping is set, a connection accepted meanwhile is
	// closed at once).
	var (
		mu       sync.Mutex
		open     = map[net.Conn]struct{}{}
		stopping bool
	)
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		stopping = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
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
		mu.Lock()
		if stopping {
			mu.Unlock()
			c.Close()
			continue
		}
		open[c] = struct{}{}
		mu.Unlock()
		conns.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
			}()
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
