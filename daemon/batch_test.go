package daemon

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// ctPair returns a listener app's PacketConn and a client's Conn joined by
// a cut-through session, with the first datagram already through so that
// the listener knows the session.
func ctPair(t testing.TB, d *Daemon) (*app.PacketConn, *app.Conn) {
	t.Helper()
	srv := attach(t, d, app.Options{Name: "sink", RxFifoSize: 1 << 20})
	cli := attach(t, d, app.Options{Name: "source", TxFifoSize: 1 << 20})
	pc, err := srv.ListenPacketConn("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.DialConn(ctx, "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("first datagram: %q %v", buf[:n], err)
	}
	pc.SetReadDeadline(time.Time{})
	return pc, c
}

func TestReadBatch(t *testing.T) {
	d := startDaemon(t)
	pc, c := ctPair(t, d)
	var sent [][]byte
	for i := range 100 {
		m := bytes.Repeat([]byte{byte(i)}, 1+i*7)
		sent = append(sent, m)
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := make([]app.Message, 16)
	got := 0
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got < len(sent) {
		n, err := pc.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[:n] {
			p := append(append([]byte(nil), m.Payload...), m.More...)
			if !bytes.Equal(p, sent[got]) || m.Len() != len(sent[got]) || m.Session == 0 || m.Remote.IsValid() {
				t.Fatalf("datagram %d: %d bytes (session %#x)", got, len(p), m.Session)
			}
			got++
		}
	}
	pc.Release()
	// Nothing left: a read times out.
	pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := pc.ReadBatch(msgs); !isTimeout(err) {
		t.Fatalf("read past the data: %v", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestDataPathAllocs checks that the hot calls allocate nothing: Write on
// a connected session, ReadBatch and Release on a listener.
func TestDataPathAllocs(t *testing.T) {
	d := startDaemon(t)
	pc, c := ctPair(t, d)
	msg := make([]byte, 512)
	msgs := make([]app.Message, 8)
	allocs := testing.AllocsPerRun(1000, func() {
		for range 4 {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < 4; {
			n, err := pc.ReadBatch(msgs)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		pc.Release()
	})
	if allocs != 0 {
		t.Errorf("Write+ReadBatch+Release: %v allocations per run, want 0", allocs)
	}
}

// BenchmarkCutThroughDatagrams measures datagrams from one app to another
// through a cut-through session (Write, then ReadBatch) ...
func BenchmarkCutThroughDatagrams(b *testing.B) {
	d := startDaemon(b)
	pc, c := ctPair(b, d)
	msg := make([]byte, 256)
	msgs := make([]app.Message, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got := 0; got < b.N; {
			n, err := pc.ReadBatch(msgs)
			if err != nil {
				return
			}
			got += n
		}
		pc.Release()
	}()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// ... and BenchmarkBaselineKernelUDP the same over the kernel's loopback
// UDP sockets.
func BenchmarkBaselineKernelUDP(b *testing.B) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	rx.SetReadBuffer(8 << 20)
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	msg := make([]byte, 256)
	done := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		got := 0
		for got < b.N {
			if got%256 == 0 {
				rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			}
			if _, _, err := rx.ReadFromUDP(buf); err != nil {
				break // the kernel dropped some: count what arrived
			}
			got++
		}
		done <- got
	}()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for range b.N {
		if _, err := tx.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	got := <-done
	if got < b.N {
		b.ReportMetric(float64(b.N-got)/float64(b.N), "lost/op")
	}
}

// BenchmarkCutThroughPingPong measures the round trip of a 64-byte
// datagram between two apps through a cut-through session: the client
// writes and waits for the reply, the listener echoes with ReadFrom and
// WriteTo. Each side sleeps for every datagram, so it measures the
// wake-up path (eventfd, runtime poller, the sleeping call) twice per
// round trip ...
func BenchmarkCutThroughPingPong(b *testing.B) {
	d := startDaemon(b)
	pc, c := ctPair(b, d)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				done <- nil
				return
			}
			if _, err := pc.WriteTo(buf[:n], addr); err != nil {
				done <- err
				return
			}
		}
	}()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n != len(msg) {
			b.Fatalf("reply: %d bytes, %v", n, err)
		}
	}
	b.StopTimer()
	pc.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// ... and BenchmarkBaselineKernelUDPPingPong the same over the kernel's
// loopback UDP sockets, read through the same runtime poller.
func BenchmarkBaselineKernelUDPPingPong(b *testing.B) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := srv.WriteToUDPAddrPort(buf[:n], addr); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	b.ResetTimer()
	for range b.N {
		if _, err := cli.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n, err := cli.Read(buf); err != nil || n != len(msg) {
			b.Fatalf("reply: %d bytes, %v", n, err)
		}
	}
}
