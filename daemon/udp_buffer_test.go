package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestPacketConnBuffers: an app's PacketConn has *net.UDPConn's
// SetReadBuffer and SetWriteBuffer, which programs reach through an
// interface (quic-go does): a size up to the rx (tx) fifo's is there, a
// larger one fails with ENOBUFS and says which option sizes the fifo,
// where the kernel's clamp would pass unnoticed.
func TestPacketConnBuffers(t *testing.T) {
	_, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "buffers", RxFifoSize: 64 << 10, TxFifoSize: 32 << 10})
	pc, err := a.ListenPacket("udp://[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	checkBuffers(t, "the PacketConn", pc, 64<<10, 32<<10, "RxFifoSize", "TxFifoSize")
}

// TestConnBuffers: a Conn has *net.TCPConn's and *net.UDPConn's
// SetReadBuffer and SetWriteBuffer too, for a UDP and a TCP session over
// the wire and a TCP session with another app of the host, whose tx fifo
// is that app's rx fifo (the error names the option that sizes it).
func TestConnBuffers(t *testing.T) {
	rig, d := tcpRig(t)
	ln := kernelListen(t, rig.A, ":7331")
	go serveEach(ln, func(c net.Conn) { io.Copy(io.Discard, c) })
	a := attach(t, d, app.Options{Name: "buffers", RxFifoSize: 64 << 10, TxFifoSize: 32 << 10})
	peer := attach(t, d, app.Options{Name: "peer", RxFifoSize: 16 << 10, TxFifoSize: 16 << 10})
	local, err := peer.Listen("tcp://0.0.0.0:7332")
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	go serveEach(local, func(c net.Conn) { io.Copy(io.Discard, c) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		name, url string
		tx        int    // the tx fifo's size
		txOption  string // the option the tx error names
	}{
		{"udp", "udp://" + rig.A.IPv4.String() + ":7331", 32 << 10, "TxFifoSize"},
		{"tcp", "tcp://" + rig.A.IPv4.String() + ":7331", 32 << 10, "TxFifoSize"},
		{"tcp cut-through", "tcp://127.0.0.1:7332", 16 << 10, "peer app's app.Options.RxFifoSize"},
	} {
		conn, err := a.Dial(ctx, c.url)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		checkBuffers(t, c.name, conn, 64<<10, c.tx, "RxFifoSize", c.txOption)
	}
}

// checkBuffers checks c's SetReadBuffer and SetWriteBuffer, which programs
// reach through an interface, against its rx and tx fifos of rx and tx
// bytes: a size up to a fifo's passes, a larger one fails with ENOBUFS
// naming the option that sized it (rxOption, txOption), a negative one
// with EINVAL; then it closes c, after which they fail with
// net.ErrClosed.
func checkBuffers(t *testing.T, what string, c io.Closer, rx, tx int, rxOption, txOption string) {
	t.Helper()
	b, ok := c.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	})
	if !ok {
		t.Fatalf("%s has no SetReadBuffer and SetWriteBuffer", what)
	}
	for _, s := range []struct {
		set    func(int) error
		n      int
		option string // "": no error
	}{
		{b.SetReadBuffer, rx, ""}, {b.SetReadBuffer, 4096, ""}, {b.SetReadBuffer, rx + 1, rxOption}, {b.SetReadBuffer, 7 << 20, rxOption},
		{b.SetWriteBuffer, tx, ""}, {b.SetWriteBuffer, tx + 1, txOption},
	} {
		err := s.set(s.n)
		switch {
		case s.option == "" && err != nil:
			t.Errorf("%s: %d bytes, within the fifo: %v", what, s.n, err)
		case s.option != "" && (!errors.Is(err, syscall.ENOBUFS) || !strings.Contains(err.Error(), s.option)):
			t.Errorf("%s: %d bytes, past the fifo: %v; want ENOBUFS naming %s", what, s.n, err, s.option)
		}
	}
	for _, set := range []func(int) error{b.SetReadBuffer, b.SetWriteBuffer} {
		if err := set(-1); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: a negative size: %v, want EINVAL", what, err)
		}
	}
	c.Close()
	if err := b.SetReadBuffer(1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("%s: after Close: %v, want net.ErrClosed", what, err)
	}
}
