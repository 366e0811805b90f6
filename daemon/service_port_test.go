package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestServiceNamePortsMatchKernel: a port given as a service name
// (tcp://ADDR:http, udp://ADDR:domain) is the service's port, as
// net.Listen, net.ListenPacket and net.Dial take one, and an unknown
// service fails as theirs do, with a *net.DNSError "unknown port".
func TestServiceNamePortsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "services"})
	b := rig.B.IPv4.String()

	l, err := a.Listen("tcp://" + b + ":http")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().(*net.TCPAddr).Port; got != 80 {
		t.Errorf("Listen tcp://%s:http: port %d, want 80", b, got)
	}
	p, err := a.ListenPacket("udp://" + b + ":domain")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.LocalAddr().(*net.UDPAddr).Port; got != 53 {
		t.Errorf("ListenPacket udp://%s:domain: port %d, want 53", b, got)
	}

	// The listener on the service's port is the one a Dial of the
	// service reaches (cut-through: both apps are on host B).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp://"+b+":http")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != netip.AddrPortFrom(rig.B.IPv4, 80) {
		t.Errorf("Dial tcp://%s:http: RemoteAddr %v", b, got)
	}

	var kerr error
	if err := rig.B.Do(func() error {
		var kl net.Listener
		if kl, kerr = net.Listen("tcp", b+":no-such-service"); kl != nil {
			kl.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, lerr := a.Listen("tcp://" + b + ":no-such-service")
	_, perr := a.ListenPacket("udp://" + b + ":no-such-service")
	_, derr := a.Dial(ctx, "tcp://"+b+":no-such-service")
	var kd *net.DNSError
	if !errors.As(kerr, &kd) {
		t.Fatalf("the kernel's net.Listen of an unknown service: %v", kerr)
	}
	for name, err := range map[string]error{"Listen": lerr, "ListenPacket": perr, "Dial": derr} {
		var d *net.DNSError
		var op *net.OpError
		if !errors.As(err, &d) || d.Err != kd.Err || !d.IsNotFound || !errors.As(err, &op) {
			t.Errorf("%s of an unknown service: %v; net.Listen's: %v", name, err, kerr)
		}
	}
}
