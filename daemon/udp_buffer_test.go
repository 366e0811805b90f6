package daemon

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

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
	type buffers interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	b, ok := pc.(buffers)
	if !ok {
		t.Fatal("the PacketConn has no SetReadBuffer and SetWriteBuffer")
	}
	for _, c := range []struct {
		set    func(int) error
		n      int
		option string // "": no error
	}{
		{b.SetReadBuffer, 64 << 10, ""}, {b.SetReadBuffer, 4096, ""}, {b.SetReadBuffer, 7 << 20, "RxFifoSize"},
		{b.SetWriteBuffer, 32 << 10, ""}, {b.SetWriteBuffer, 32<<10 + 1, "TxFifoSize"},
	} {
		err := c.set(c.n)
		switch {
		case c.option == "" && err != nil:
			t.Errorf("%d bytes, within the fifo: %v", c.n, err)
		case c.option != "" && (!errors.Is(err, syscall.ENOBUFS) || !strings.Contains(err.Error(), c.option)):
			t.Errorf("%d bytes, past the fifo: %v; want ENOBUFS naming %s", c.n, err, c.option)
		}
	}
	if err := b.SetReadBuffer(-1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a negative size: %v, want EINVAL", err)
	}
	pc.Close()
	if err := b.SetReadBuffer(1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after Close: %v, want net.ErrClosed", err)
	}
}
