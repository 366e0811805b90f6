package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// demoTCPBytes is what the demo's kernel TCP client sends and checks.
const demoTCPBytes = 16 << 20

// demoTCPStall is how long the demo's TCP echo may move no byte in a
// direction before it fails.
const demoTCPStall = 30 * time.Second

// demoTCPLimit bounds the whole TCP echo, which takes well under a second
// on a veth: a path that loses most segments moves a few bytes now and then
// (no stall) and would take hours.
const demoTCPLimit = 2 * time.Minute

// stallReader reads from c with a read deadline demoTCPStall ahead of
// each read.
type stallReader struct{ c net.Conn }

func (r stallReader) Read(p []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(demoTCPStall))
	return r.c.Read(p)
}

// runDemoTCP is the demo's TCP part: the echo app listens on
// tcp://0.0.0.0:7000 and a kernel TCP client on host A sends demoTCPBytes
// through it, half closes, and checks every byte of the echo up to the
// app's FIN.
// drops, if not nil, says what the datapath dropped, for the error when
// the echo fails.
func runDemoTCP(ctx context.Context, out io.Writer, a *app.App, rig *nstest.Pair, drops func() map[string]uint64) error {
	ln, err := a.Listen("tcp://0.0.0.0:7000")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}()
		}
	}()
	fmt.Fprintf(out, "echo app: echoing TCP on %s\n", ln.Addr())
	data := make([]byte, demoTCPBytes)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	dst := netip.AddrPortFrom(rig.B.IPv4, 7000)
	var got []byte
	var local net.Addr
	var overLimit atomic.Bool
	start := time.Now()
	err = rig.A.Do(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		local = c.LocalAddr()
		limit := time.AfterFunc(demoTCPLimit, func() { overLimit.Store(true); c.Close() })
		defer limit.Stop()
		defer context.AfterFunc(ctx, func() { c.Close() })()
		// The echo fails when it stalls (no byte moves for
		// demoTCPStall in a direction), not when it is slow.
		errc := make(chan error, 1)
		go func() {
			var err error
			for off := 0; off < len(data) && err == nil; {
				c.SetWriteDeadline(time.Now().Add(demoTCPStall))
				var n int
				n, err = c.Write(data[off:min(off+64<<10, len(data))])
				off += n
			}
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		got, err = io.ReadAll(stallReader{c})
		if werr := <-errc; werr != nil {
			return fmt.Errorf("write: %w", werr)
		}
		return err
	})
	took := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return errDemoInterrupted
	}
	if err != nil {
		if overLimit.Load() {
			err = fmt.Errorf("not done after %v, %d of %d bytes echoed", demoTCPLimit, len(got), len(data))
		}
		if drops != nil {
			err = fmt.Errorf("%w; the datapath's drops: %v", err, drops())
		}
		return fmt.Errorf("demo failed: kernel TCP client %v -> %v: %w", local, dst, err)
	}
	fmt.Fprintf(out, "client: kernel TCP socket on host A %v -> %v: %d bytes sent, %d echoed in %v (%.1f MB/s each way)\n",
		local, dst, len(data), len(got), took.Round(time.Millisecond), float64(len(data))/took.Seconds()/1e6)
	if !bytes.Equal(got, data) {
		return fmt.Errorf("demo failed: the TCP echo differs from what was sent (%d of %d bytes back)", len(got), len(data))
	}
	return nil
}
