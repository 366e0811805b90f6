package tcp

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/xsessiond/xsessiond/fifo"
)

type refuseAll struct{}

func (refuseAll) Accept(*Conn) (*fifo.Fifo, *fifo.Fifo, Handler, error) {
	return nil, nil, nil, ErrClosed
}
func (refuseAll) ListenerClosed(*Listener) {}

// TestListenerLimitedCountsLimits: Listener.Limited counts the handshakes
// refused over the Stack's limits (here MaxConns), and not one refused
// because the Stack is closing (its Close has begun, the Listener not yet
// closed): that is no limit an operator could raise.
func TestListenerLimitedCountsLimits(t *testing.T) {
	s, err := NewStack(WriterFunc(func(Packet) bool { return true }), Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddAddress(netip.MustParsePrefix("10.0.0.2/24")); err != nil {
		t.Fatal(err)
	}
	l, err := s.Listen(netip.MustParseAddrPort("10.0.0.2:80"), 0, 1, refuseAll{})
	if err != nil {
		t.Fatal(err)
	}
	// accept as the Listener's pump calls it for a completed handshake
	// (the endpoint is a fresh one: the refusals never look at it).
	accept := func() {
		var wq waiter.Queue
		ep, terr := s.gs.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
		if terr != nil {
			t.Fatal(terr)
		}
		l.accept(ep.(*tcp.Endpoint), &wq, tcpip.FullAddress{})
	}

	full, err := s.newConn(1) // the one Conn MaxConns allows
	if err != nil {
		t.Fatal(err)
	}
	accept()
	s.release(full)
	if n := l.Limited(); n != 1 {
		t.Fatalf("limited %d after a refusal over MaxConns, want 1", n)
	}

	s.mu.Lock()
	s.closed = true // Stack.Close's first step
	s.mu.Unlock()
	accept()
	s.mu.Lock()
	s.closed = false // for the deferred Close to run in full
	s.mu.Unlock()
	if n := l.Limited(); n != 1 {
		t.Fatalf("limited %d after a refusal of the closing Stack, want 1", n)
	}
}
