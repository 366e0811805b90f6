package flow

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// maxURILen bounds the URIs ParseURI looks at; nothing valid comes close.
const maxURILen = 256

// uriCache remembers the last URI parsed successfully and its endpoint.
// Apps tend to bind or connect the same URI many times in a row.
type uriCache struct {
	uri string
	ep  Endpoint
}

var lastURI atomic.Pointer[uriCache]

// ParseURI parses a session URI into an endpoint. Accepted forms:
//
//	tcp://10.0.0.1/80        udp://fd00::1/53        (address / port)
//	tcp://10.0.0.1:80        udp://[fd00::1]:53      (address : port)
//
// The scheme is tcp or udp (case-insensitive). sctp parses too, but bind
// and connect refuse it with ErrNotSupported, so the errors of a URI
// without a usable scheme offer tcp:// and udp:// alone. A wildcard address is one
// family's: 0.0.0.0 every IPv4 address, :: every IPv6 one (as a kernel
// socket with IPV6_V6ONLY set); there is no address that means both (the
// app library's Listen and ListenPacket take tcp://:PORT as a bind of
// each, and its Dial as the loopback address). The port is decimal,
// 0-65535 (the app library turns a service name, tcp://:http, into its
// number before it parses).
// Errors wrap ErrInvalidURI and say which part was wrong. The endpoint's
// IfIndex and FIB are left zero; bind and connect fill them from the app's
// namespace. ParseURI is safe for concurrent use.
func ParseURI(uri string) (Endpoint, error) {
	if c := lastURI.Load(); c != nil && c.uri == uri {
		return c.ep, nil
	}
	ep, err := parseURI(uri)
	if err != nil {
		return Endpoint{}, err
	}
	lastURI.Store(&uriCache{uri: strings.Clone(uri), ep: ep})
	return ep, nil
}

// SplitZone returns uri without the zone of its bracketed IPv6 address,
// and the zone: tcp://[fe80::1%eth0]:80 gives tcp://[fe80::1]:80 and
// "eth0", as net.Dial takes a link-local address. A URI without a zone
// comes back whole, with "". ParseURI refuses a zone: the caller says
// whether it names the right link.
func SplitZone(uri string) (string, string) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || !strings.HasPrefix(rest, "[") {
		return uri, ""
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return uri, ""
	}
	host, zone, ok := strings.Cut(rest[1:end], "%")
	if !ok || zone == "" {
		return uri, ""
	}
	return scheme + "://[" + host + rest[end:], zone
}

func uriError(uri, what string) error {
	if len(uri) > 64 {
		uri = uri[:64] + "..."
	}
	return fmt.Errorf("%w %q: %s", ErrInvalidURI, uri, what)
}

func parseURI(uri string) (Endpoint, error) {
	if len(uri) > maxURILen {
		return Endpoint{}, uriError(uri, "too long")
	}
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return Endpoint{}, uriError(uri, "missing scheme (want tcp://ADDR:PORT or udp://ADDR:PORT)")
	}
	var ep Endpoint
	switch strings.ToLower(scheme) {
	case "tcp":
		ep.Transport = TransportTCP
	case "udp":
		ep.Transport = TransportUDP
	case "sctp":
		ep.Transport = TransportSCTP
	default:
		return Endpoint{}, uriError(uri, fmt.Sprintf("unknown scheme %q (want tcp://ADDR:PORT or udp://ADDR:PORT)", scheme))
	}
	var host, port string
	switch {
	case strings.HasPrefix(rest, "["):
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return Endpoint{}, uriError(uri, "missing ']' after IPv6 address")
		}
		host = rest[1:end]
		after := rest[end+1:]
		if len(after) == 0 || (after[0] != ':' && after[0] != '/') {
			return Endpoint{}, uriError(uri, "missing port after ']'")
		}
		port = after[1:]
		a, err := netip.ParseAddr(host)
		if err == nil && a.Is6() && a.Zone() != "" {
			return Endpoint{}, uriError(uri, fmt.Sprintf("zone %q not taken: a link-local address is on the link of the daemon's interface; give the address alone", a.Zone()))
		}
		if err != nil || !a.Is6() {
			return Endpoint{}, uriError(uri, fmt.Sprintf("bad IPv6 address %q", host))
		}
		ep.Addr = a.Unmap()
	default:
		// address/port, or IPv4:port. An IPv6 address without brackets
		// only works with the slash form.
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			host, port = rest[:i], rest[i+1:]
		} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			host, port = rest[:i], rest[i+1:]
			if strings.IndexByte(host, ':') >= 0 {
				return Endpoint{}, uriError(uri, "IPv6 address needs brackets with ':port'")
			}
		} else {
			return Endpoint{}, uriError(uri, "missing port")
		}
		if host == "" {
			return Endpoint{}, uriError(uri, "no address (0.0.0.0 is every IPv4 address of the namespace, [::] every IPv6 one; the app library's Listen takes none as both, its Dial as the loopback address)")
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return Endpoint{}, uriError(uri, fmt.Sprintf("bad address %q", host))
		}
		ep.Addr = a.Unmap()
	}
	if port == "" {
		return Endpoint{}, uriError(uri, "missing port")
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return Endpoint{}, uriError(uri, fmt.Sprintf("bad port %q", port))
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Endpoint{}, uriError(uri, fmt.Sprintf("port %q out of range 0-65535", port))
	}
	ep.Port = uint16(p)
	return ep, nil
}

// URIName splits a URI whose host is a name, tcp://db.example:5432 or
// udp://ns1.example/53, into its transport, the name and the port, for a
// caller that resolves the name (as net.Dial does) and connects to an
// address of it. ok is false for a URI whose host is an address, or that is
// not a URI of that form; ParseURI says what is wrong with it.
func URIName(uri string) (t Transport, name string, port uint16, ok bool) {
	if len(uri) > maxURILen {
		return 0, "", 0, false
	}
	scheme, rest, found := strings.Cut(uri, "://")
	if !found {
		return 0, "", 0, false
	}
	switch strings.ToLower(scheme) {
	case "tcp":
		t = TransportTCP
	case "udp":
		t = TransportUDP
	default:
		return 0, "", 0, false
	}
	i := strings.LastIndexAny(rest, ":/")
	if i <= 0 {
		return 0, "", 0, false
	}
	name, ps := rest[:i], rest[i+1:]
	if !isHostName(name) || ps == "" || strings.Trim(ps, "0123456789") != "" {
		return 0, "", 0, false
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return 0, "", 0, false
	}
	return t, name, uint16(p), true
}

// isHostName reports whether s is a DNS host name (RFC 1123 labels of
// letters, digits and '-', dot-separated, an optional final dot) and not
// an address.
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	letter := false
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
				letter = true
			case c >= '0' && c <= '9', c == '-':
			default:
				return false
			}
		}
	}
	return letter // all digits and dots is a malformed address, not a name
}

// URI formats e in the modern form, tcp://10.0.0.1:80 or tcp://[::1]:80.
func (e Endpoint) URI() string {
	return e.Transport.String() + "://" + netip.AddrPortFrom(e.Addr, e.Port).String()
}
