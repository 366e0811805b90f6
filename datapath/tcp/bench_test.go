package tcp_test

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/fifo"
)

// BenchmarkRequestResponse64: the client sends 64 bytes, the server echoes
// them, the client waits for them: one round trip per op through both
// stacks, their pumps, the wire goroutines and the fifos.
func BenchmarkRequestResponse64(b *testing.B) {
	p := newPair(b, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(b, p.b, netip.AddrPortFrom(addrB, 80), 1<<16)
	client, server := dial(b, p, ac, netip.AddrPortFrom(addrB, 80), 1<<16)
	stop := make(chan struct{})
	echoDone := make(chan error, 1)
	go func() { echoDone <- echo(server, stop) }()
	req := make([]byte, 64)
	resp := make([]byte, 64)
	timer := time.NewTimer(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		if _, err := client.appTx.Enqueue(req); err != nil {
			b.Fatal(err)
		}
		if client.appTx.SetEvent() {
			client.getConn().Kick()
		}
		for got := 0; got < len(resp); {
			k, err := client.appRx.Dequeue(resp[got:])
			if k > 0 {
				got += k
				continue
			}
			if !errors.Is(err, fifo.ErrEmpty) {
				b.Fatal(err)
			}
			client.appRx.ClearEvent()
			if client.appRx.MaxDequeue() > 0 {
				continue
			}
			timer.Reset(5 * time.Second)
			select {
			case <-client.readable:
			case <-timer.C:
				b.Fatal("no response")
			}
			timer.Stop()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
	close(stop)
	if err := <-echoDone; err != nil {
		b.Fatal(err)
	}
}

// echo copies the app's rx fifo into its tx fifo until stop.
func echo(a *app, stop chan struct{}) error {
	buf := make([]byte, 4096)
	for {
		k, err := a.appRx.Dequeue(buf)
		if k > 0 {
			if a.appRx.DeqNotify(k) {
				a.getConn().Kick()
			}
			if _, err := a.appTx.Enqueue(buf[:k]); err != nil {
				return err
			}
			if a.appTx.SetEvent() {
				a.getConn().Kick()
			}
			continue
		}
		if !errors.Is(err, fifo.ErrEmpty) {
			return err
		}
		a.appRx.ClearEvent()
		if a.appRx.MaxDequeue() > 0 {
			continue
		}
		select {
		case <-a.readable:
		case <-stop:
			return nil
		}
	}
}

// BenchmarkBulk: one direction, 1 MiB per op, 1 MiB fifos.
func BenchmarkBulk(b *testing.B) {
	p := newPair(b, tcp.Options{}, wireOpts{}, wireOpts{})
	_, ac := listen(b, p.b, netip.AddrPortFrom(addrB, 80), fifoSize)
	client, server := dial(b, p, ac, netip.AddrPortFrom(addrB, 80), fifoSize)
	const chunk = 1 << 20
	b.SetBytes(chunk)
	b.ReportAllocs()
	n := int64(b.N) * chunk
	errc := make(chan error, 1)
	b.ResetTimer()
	cpu := cpuTime()
	go func() {
		_, err := server.recv(n, discard{}, 64<<10, 0)
		errc <- err
	}()
	if err := client.send(n, 9, discard{}, 64<<10); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/MiB")
}

// cpuTime returns the CPU time (user and system) the process used so far:
// on a loaded machine the wall-clock rates follow the CPU share the process
// gets, the CPU cost per byte does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discard is a hash.Hash that keeps nothing, for benchmarks.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Sum(b []byte) []byte         { return b }
func (discard) Reset()                      {}
func (discard) Size() int                   { return 0 }
func (discard) BlockSize() int              { return 1 }
