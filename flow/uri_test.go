package flow_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// parse_uri

func TestParseURI(t *testing.T) {
	for _, c := range []struct {
		name, uri string
		tr        flow.Transport
		addr      string
		port      uint16
		errPart   string // part named in the error, "" for success
	}{
		{"SlashTCP4", "tcp://10.0.0.1/80", flow.TransportTCP, "10.0.0.1", 80, ""},
		{"SlashUDP4", "udp://10.0.0.1/53", flow.TransportUDP, "10.0.0.1", 53, ""},
		{"SlashUDP6", "udp://fd00::1/53", flow.TransportUDP, "fd00::1", 53, ""},
		{"SlashTCP6", "tcp://::/0", flow.TransportTCP, "::", 0, ""},
		{"SlashSCTP4", "sctp://10.0.0.1/9", flow.TransportSCTP, "10.0.0.1", 9, ""},
		{"SlashSCTP6", "sctp://fd00::2/9", flow.TransportSCTP, "fd00::2", 9, ""},
		{"ColonTCP4", "tcp://10.0.0.1:80", flow.TransportTCP, "10.0.0.1", 80, ""},
		{"BracketUDP6", "udp://[::1]:65535", flow.TransportUDP, "::1", 65535, ""},
		{"BracketSlash6", "udp://[fd00::1]/7", flow.TransportUDP, "fd00::1", 7, ""},
		{"UpperScheme", "TCP://1.2.3.4:5", flow.TransportTCP, "1.2.3.4", 5, ""},
		{"MappedV4", "tcp://[::ffff:1.2.3.4]:5", flow.TransportTCP, "1.2.3.4", 5, ""},
		{"NoScheme", "10.0.0.1:80", 0, "", 0, "scheme"},
		{"UnknownScheme", "http://10.0.0.1:80", 0, "", 0, "scheme"},
		{"BadAddress", "tcp://10.0.0.256:80", 0, "", 0, "address"},
		{"Hostname", "tcp://localhost:80", 0, "", 0, "address"},
		{"EmptyHost", "tcp://:8080", 0, "", 0, "0.0.0.0 is every IPv4 address"},
		{"ZoneRefused", "tcp://[fe80::1%eth0]:80", 0, "", 0, "zone \"eth0\" not taken"},
		{"V6WithoutBrackets", "tcp://fd00::1:80", 0, "", 0, "brackets"},
		{"V4InBrackets", "tcp://[1.2.3.4]:80", 0, "", 0, "address"},
		{"MissingBracket", "tcp://[fd00::1:80", 0, "", 0, "]"},
		{"MissingPort", "tcp://10.0.0.1", 0, "", 0, "port"},
		{"EmptyPort", "tcp://10.0.0.1:", 0, "", 0, "port"},
		{"PortTooBig", "tcp://10.0.0.1:65536", 0, "", 0, "port"},
		{"PortSign", "tcp://10.0.0.1:+80", 0, "", 0, "port"},
		{"PortJunk", "tcp://10.0.0.1:80x", 0, "", 0, "port"},
		{"TrailingPath", "tcp://10.0.0.1:80/", 0, "", 0, "address"},
		{"Empty", "", 0, "", 0, "scheme"},
		{"TooLong", "tcp://" + strings.Repeat("1", 300), 0, "", 0, "long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := flow.ParseURI(c.uri)
			if c.errPart != "" {
				wantErr(t, err, flow.ErrInvalidURI)
				if !strings.Contains(err.Error(), c.errPart) {
					t.Fatalf("error %q does not name %q", err, c.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Transport != c.tr || e.Addr != netip.MustParseAddr(c.addr) || e.Port != c.port || e.IfIndex != 0 || e.FIB != 0 {
				t.Fatalf("got %+v", e)
			}
			// The modern form parses back to the same endpoint.
			e2, err := flow.ParseURI(e.URI())
			if err != nil || e2 != e {
				t.Fatalf("round trip %q: %+v %v", e.URI(), e2, err)
			}
		})
	}
}

func TestParseURI_CacheConcurrent(t *testing.T) {
	uris := []string{"tcp://10.0.0.1:80", "udp://[::1]:53", "sctp://10.0.0.2/9", "bad://x"}
	want := make([]flow.Endpoint, len(uris))
	wantErrs := make([]bool, len(uris))
	for i, u := range uris {
		e, err := flow.ParseURI(u)
		want[i], wantErrs[i] = e, err != nil
	}
	// A repeated URI is a hit: the entry stays the same, nothing is
	// allocated, and the answer is the parsed one.
	if _, err := flow.ParseURI(uris[1]); err != nil {
		t.Fatal(err)
	}
	id1, u1, e1 := flow.CachedURI()
	if u1 != uris[1] || e1 != want[1] {
		t.Fatalf("cache holds %q %+v after parsing %q", u1, e1, uris[1])
	}
	if a := testing.AllocsPerRun(100, func() {
		if e, err := flow.ParseURI(uris[1]); err != nil || e != want[1] {
			t.Fatalf("cached parse: %+v %v", e, err)
		}
	}); a != 0 {
		t.Fatalf("a cache hit allocates %v", a)
	}
	if id2, _, _ := flow.CachedURI(); id2 != id1 {
		t.Fatal("a repeated URI replaced the cache entry: no hit")
	}
	// An error is never cached.
	if _, err := flow.ParseURI(uris[3]); err == nil {
		t.Fatal("bad URI parsed")
	}
	if id3, _, _ := flow.CachedURI(); id3 != id1 {
		t.Fatal("a failed parse replaced the cache entry")
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				k := (i + g) % len(uris)
				for rep := 0; rep < 2; rep++ { // the second parse hits the cache, if nobody raced
					e, err := flow.ParseURI(uris[k])
					if (err != nil) != wantErrs[k] || e != want[k] {
						t.Errorf("ParseURI(%q) = %+v, %v", uris[k], e, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	// Whatever raced last left a consistent entry.
	_, u, e := flow.CachedURI()
	if k := slices.Index(uris, u); k < 0 || wantErrs[k] || e != want[k] {
		t.Fatalf("cache left holding %q %+v", u, e)
	}
}

// session_lookup_local_listener_make_handle / parse_handle

func TestLocalListenerHandle(t *testing.T) {
	for _, tr := range []flow.Transport{flow.TransportTCP, flow.TransportUDP, flow.TransportSCTP} {
		for _, fam := range []uint8{flow.Family4, flow.Family6} {
			for _, port := range []uint16{0, 1, 80, 65535} {
				h := flow.LocalListenerHandle(tr, fam, port)
				if !h.IsLocal() || h == flow.InvalidHandle {
					t.Fatalf("%#x not local", h)
				}
				e, err := flow.ParseLocalListenerHandle(h)
				if err != nil || e.Transport != tr || e.Port != port || e.Addr.Is4() != (fam == flow.Family4) || !e.IsZero() {
					t.Fatalf("parse %#x = %+v %v", h, e, err)
				}
			}
		}
	}
	for _, h := range []flow.Handle{
		flow.MakeHandle(1, 2),
		flow.InvalidHandle,
		flow.LocalHandleBit | 9<<24 | 6<<16,
		flow.LocalHandleBit | 4<<24 | 99<<16,
		flow.LocalHandleBit | 1<<40 | 4<<24 | 6<<16,
	} {
		if _, err := flow.ParseLocalListenerHandle(h); err == nil {
			t.Errorf("%#x parsed", h)
		}
	}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func TestURIName(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		t    flow.Transport
		name string
		port uint16
		ok   bool
	}{
		{"tcp://db.example:5432", flow.TransportTCP, "db.example", 5432, true},
		{"UDP://ns1.example/53", flow.TransportUDP, "ns1.example", 53, true},
		{"tcp://localhost:80", flow.TransportTCP, "localhost", 80, true},
		{"tcp://host-1.example.:80", flow.TransportTCP, "host-1.example.", 80, true},
		{"tcp://10.0.0.1:80", 0, "", 0, false},
		{"tcp://[::1]:80", 0, "", 0, false},
		{"tcp://::1/80", 0, "", 0, false},
		{"tcp://10.0.0.300:80", 0, "", 0, false},
		{"tcp://-bad.example:80", 0, "", 0, false},
		{"tcp://bad_name:80", 0, "", 0, false},
		{"tcp://a..b:80", 0, "", 0, false},
		{"tcp://example:", 0, "", 0, false},
		{"tcp://example:65536", 0, "", 0, false},
		{"tcp://example:8x", 0, "", 0, false},
		{"sctp://example:80", 0, "", 0, false},
		{"example:80", 0, "", 0, false},
		{"tcp://" + strings.Repeat("a", 64) + ".example:80", 0, "", 0, false},
	} {
		tr, name, port, ok := flow.URIName(tc.uri)
		if tr != tc.t || name != tc.name || port != tc.port || ok != tc.ok {
			t.Errorf("URIName(%q) = %v %q %d %v; want %v %q %d %v", tc.uri, tr, name, port, ok, tc.t, tc.name, tc.port, tc.ok)
		}
	}
}

func TestSplitZone(t *testing.T) {
	for _, tc := range []struct{ uri, plain, zone string }{
		{"tcp://[fe80::1%eth0]:80", "tcp://[fe80::1]:80", "eth0"},
		{"udp://[fe80::1%2]/53", "udp://[fe80::1]/53", "2"},
		{"tcp://[fe80::1]:80", "tcp://[fe80::1]:80", ""},
		{"tcp://[fe80::1%]:80", "tcp://[fe80::1%]:80", ""},
		{"tcp://10.0.0.1:80", "tcp://10.0.0.1:80", ""},
		{"tcp://[fe80::1%eth0:80", "tcp://[fe80::1%eth0:80", ""},
		{"fe80::1%eth0", "fe80::1%eth0", ""},
	} {
		plain, zone := flow.SplitZone(tc.uri)
		if plain != tc.plain || zone != tc.zone {
			t.Errorf("SplitZone(%q) = %q, %q; want %q, %q", tc.uri, plain, zone, tc.plain, tc.zone)
		}
		if tc.zone != "" {
			if _, err := flow.ParseURI(plain); err != nil {
				t.Errorf("ParseURI(%q) after SplitZone: %v", plain, err)
			}
		}
	}
}
