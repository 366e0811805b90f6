package app

import (
	"context"
	"net"
	"strconv"
	"strings"
)

// servicePort returns uri with a port given as a service name
// (tcp://:http, udp://ns1.example:domain) replaced by its number, looked up
// as net.Dial and net.Listen look it up (net.LookupPort: this host's
// services database, then Go's table of the common ones), and a port with
// a plus sign (tcp://:+80) by its number, as they read it. A URI whose port
// is a number, or that is not of the form scheme://HOST:PORT or
// scheme://HOST/PORT, comes back unchanged, for the parser to judge. An
// unknown service fails with the lookup's *net.DNSError ("unknown port"),
// as net.Listen's does.
func servicePort(ctx context.Context, uri string) (string, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || len(uri) > maxServiceURILen {
		return uri, nil
	}
	i := portStart(rest)
	if i < 0 || (rest[0] != '[' && rest[i-1] == ':' && strings.IndexByte(rest[:i-1], ':') >= 0) {
		// No port, or an IPv6 address without brackets before ':port',
		// which the parser says is wrong.
		return uri, nil
	}
	name := rest[i:]
	if len(name) > 1 && name[0] == '+' && strings.Trim(name[1:], "0123456789") == "" {
		// A signed decimal port, as net.Dial and net.Listen read one.
		return scheme + "://" + rest[:i] + name[1:], nil
	}
	if !isServiceName(name) {
		return uri, nil
	}
	network := strings.ToLower(scheme)
	if network != "tcp" && network != "udp" {
		return uri, nil
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, name)
	if err != nil {
		return uri, err
	}
	return scheme + "://" + rest[:i] + strconv.Itoa(port), nil
}

// maxServiceURILen bounds the URIs servicePort looks at: the parser
// refuses longer ones anyway.
const maxServiceURILen = 256

// portStart returns the index in rest (a URI after "://") where its port
// begins: after the ']' and separator of a bracketed IPv6 address, or
// after the last '/' or ':'; -1 if it has none.
func portStart(rest string) int {
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 || end+1 >= len(rest) || (rest[end+1] != ':' && rest[end+1] != '/') {
			return -1
		}
		return end + 2
	}
	i := strings.LastIndexAny(rest, ":/")
	if i < 0 {
		return -1
	}
	return i + 1
}

// isServiceName reports whether s looks like a service name of the
// services database (RFC 6335: letters, digits and '-', at least one
// letter, at most 15 characters; the database holds some longer ones and
// '_' or '.', so those are taken too): not a number, which the parser
// reads itself.
func isServiceName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			letter = true
		case c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return letter
}
