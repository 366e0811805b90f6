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
// The scheme is tcp, udp or sctp (case-insensitive); sctp parses, but bind
// and connect refuse it with ErrNotSupported. The port is decimal, 0-65535.
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
		return Endpoint{}, uriError(uri, "missing scheme (want tcp://, udp:// or sctp://)")
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
		return Endpoint{}, uriError(uri, fmt.Sprintf("unknown scheme %q (want tcp, udp or sctp)", scheme))
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
		if err != nil || !a.Is6() || a.Zone() != "" {
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

// URI formats e in the modern form, tcp://10.0.0.1:80 or tcp://[::1]:80.
func (e Endpoint) URI() string {
	return e.Transport.String() + "://" + netip.AddrPortFrom(e.Addr, e.Port).String()
}
