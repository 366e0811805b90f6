package app

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestServicePort(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ in, want string }{
		{"tcp://:http", "tcp://:80"},
		{"TCP://10.0.0.1:https", "TCP://10.0.0.1:443"},
		{"udp://[fd00::1]:domain", "udp://[fd00::1]:53"},
		{"udp://fd00::1/domain", "udp://fd00::1/53"},
		{"tcp://db.example:http", "tcp://db.example:80"},
		{"tcp://10.0.0.1:8080", "tcp://10.0.0.1:8080"}, // a number: the parser's
		{"tcp://10.0.0.1:+8080", "tcp://10.0.0.1:8080"},
		{"udp://[::1]:+53", "udp://[::1]:53"},
		{"tcp://10.0.0.1:+", "tcp://10.0.0.1:+"},
		{"tcp://10.0.0.1", "tcp://10.0.0.1"},   // no port: the parser's error
		{"tcp://fd00::abc", "tcp://fd00::abc"}, // no brackets: the parser's error
		{"sctp://10.0.0.1:http", "sctp://10.0.0.1:http"},
		{"tcp://[fd00::1]http", "tcp://[fd00::1]http"},
		{"no scheme:http", "no scheme:http"},
	} {
		got, err := servicePort(ctx, c.in)
		if err != nil || got != c.want {
			t.Errorf("servicePort(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	// As net.Listen says it: a *net.DNSError, "unknown port".
	_, kerr := net.Listen("tcp", "127.0.0.1:no-such-service")
	_, err := servicePort(ctx, "tcp://127.0.0.1:no-such-service")
	var kd, d *net.DNSError
	if !errors.As(kerr, &kd) || !errors.As(err, &d) || d.Err != kd.Err || d.Name != kd.Name || !d.IsNotFound {
		t.Errorf("unknown service: %v; the kernel's net.Listen: %v", err, kerr)
	}
}
