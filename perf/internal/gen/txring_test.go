package gen

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestSentEqualsKernelReceived paces the generator at a rate a kernel
// socket keeps up with and checks that every frame the generator counts as
// sent arrives, intact, at a UDP socket in the other host.
func TestSentEqualsKernelReceived(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	checkSentEqualsReceived(t, p, func(cfg Config) (sender, error) {
		cfg.Batch = 16
		return New(cfg)
	})
}

// TestXDPSentEqualsKernelReceived is the same for the XDP generator, into
// a host whose veth end has GRO on (a NAPI to take XDP frames).
func TestXDPSentEqualsKernelReceived(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	restore, err := xsktest.EnableGRO(p.B)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	checkSentEqualsReceived(t, p, func(cfg Config) (sender, error) { return NewXDP(cfg) })
}

// sender is what checkSentEqualsReceived drives.
type sender interface {
	Run(ctx context.Context) error
	Sent() uint64
	Errors() uint64
	Close() error
}

// checkSentEqualsReceived runs the generator newGen makes, in host A at
// 20,000 frames/s for 300 ms (4 flows, 64-byte payloads), into a UDP
// socket of host B, and checks that what it counts as sent arrived.
func checkSentEqualsReceived(t *testing.T, p *nstest.Pair, newGen func(Config) (sender, error)) {
	t.Helper()
	const port = 9000
	conn, err := p.B.ListenUDP(netip.AddrPortFrom(p.B.IPv4, port), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got, bad atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n != 64 || from.Port < 40000 || from.Port >= 40004 {
				bad.Add(1)
			}
			got.Add(1)
		}
	}()

	spec := FrameSpec{
		SrcMAC: p.A.MAC, DstMAC: p.B.MAC, SrcIP: p.A.IPv4, DstIP: p.B.IPv4,
		SrcPortBase: 40000, DstPort: port, Flows: 4, Payload: 64,
	}
	var g sender
	if err := p.A.Do(func() (err error) {
		g, err = newGen(Config{FrameSpec: spec, IfIndex: p.A.IfIndex, Rate: 20000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.A.Do(func() error { return g.Run(ctx) }); err != nil {
		t.Fatal(err)
	}
	sent := g.Sent()
	if sent == 0 || g.Errors() != 0 {
		t.Fatalf("sent %d, errors %d", sent, g.Errors())
	}
	if sent > 20000*35/100 { // 300 ms and some slack for a loaded machine
		t.Errorf("sent %d in 300 ms at 20,000/s", sent)
	}
	// Wait for the receiver to drain its queue: the count settles at sent.
	for deadline := time.Now().Add(5 * time.Second); got.Load() < sent && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // anything beyond sent would show now
	conn.Close()
	<-done
	if got.Load() != sent {
		t.Fatalf("generator sent %d, kernel socket received %d", sent, got.Load())
	}
	if bad.Load() != 0 {
		t.Fatalf("%d datagrams with the wrong size or source port", bad.Load())
	}
	g.Close()
	if g.Sent() != sent {
		t.Errorf("Sent after Close %d, want %d", g.Sent(), sent)
	}
	t.Logf("sent %d = received %d (paced at 20000 pps for 300 ms)", sent, got.Load())
}

// TestSendStepAllocatesNothing checks the generator's per-batch work: mark
// slots, kick the kernel, reap what it released.
func TestSendStepAllocatesNothing(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	spec := FrameSpec{
		SrcMAC: p.A.MAC, DstMAC: net.HardwareAddr{0x02, 0, 0x5e, 0, 0, 1}, SrcIP: p.A.IPv4, DstIP: p.B.IPv4,
		SrcPortBase: 40000, DstPort: 9000, Flows: 4, Payload: 64,
	}
	var g *Generator
	if err := p.A.Do(func() (err error) {
		g, err = New(Config{FrameSpec: spec, IfIndex: p.A.IfIndex})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	allocs := testing.AllocsPerRun(200, func() {
		g.fill(32)
		if err := g.kick(); err != nil {
			t.Fatal(err)
		}
		g.reap()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch, want 0", allocs)
	}
	if g.Sent() == 0 {
		t.Error("nothing sent")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	spec := testSpec()
	spec.Payload = 64
	if _, err := New(Config{FrameSpec: spec}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("ifindex 0: err %v, want ErrBadConfig", err)
	}
	if _, err := New(Config{FrameSpec: spec, IfIndex: 1, RingFrames: 100}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("ring of 100: err %v, want ErrBadConfig", err)
	}
}
