package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/xsessiond/xsessiond/app"
)

// dnsAnswerer answers A questions for qN.example. with 10.0.N/256.N%256,
// and TXT questions for big.example. with 20 strings of 200 bytes,
// truncated as the transport requires (over UDP, to 512 bytes without
// EDNS0: the flag that sends a resolver to TCP).
func dnsAnswerer(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	switch {
	case q.Qtype == dns.TypeA && strings.HasPrefix(q.Name, "q"):
		var n int
		if _, err := fmt.Sscanf(q.Name, "q%d.example.", &n); err == nil {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, 0, byte(n/256), byte(n%256))})
		}
	case q.Qtype == dns.TypeTXT && q.Name == "big.example.":
		for i := range 20 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("%03d%s", i, strings.Repeat("x", 197))}})
		}
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		m.Truncate(dns.MinMsgSize)
	}
	w.WriteMsg(m)
}

// TestDNSServerOverApp: miekg/dns's server, the DNS library Go programs
// serve with, runs unchanged on an app's PacketConn (UDP) and Listener
// (TCP): a kernel client of host A asks 500 questions over UDP and 50
// over TCP, each answer checked, and a question whose answer does not fit
// a UDP reply comes back truncated and is asked again over TCP, as
// resolvers do; IPv4 and IPv6.
func TestDNSServerOverApp(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "dns"})
	for _, fam := range []struct {
		name string
		b    netip.Addr
	}{{"ipv4", rig.B.IPv4}, {"ipv6", rig.B.IPv6}} {
		t.Run(fam.name, func(t *testing.T) {
			at := netip.AddrPortFrom(fam.b, 5353)
			pc, err := a.ListenPacket("udp://" + at.String())
			if err != nil {
				t.Fatal(err)
			}
			ln, err := a.Listen("tcp://" + at.String())
			if err != nil {
				t.Fatal(err)
			}
			for _, srv := range []*dns.Server{
				{PacketConn: pc, Handler: dns.HandlerFunc(dnsAnswerer)},
				{Listener: ln, Handler: dns.HandlerFunc(dnsAnswerer)},
			} {
				go srv.ActivateAndServe()
				defer srv.Shutdown()
			}
			ask := func(c *dns.Client, name string, qtype uint16) (*dns.Msg, error) {
				q := new(dns.Msg)
				q.SetQuestion(name, qtype)
				r, _, err := c.Exchange(q, at.String())
				return r, err
			}
			if err := rig.A.Do(func() error {
				for _, tr := range []struct {
					name string
					n    int
				}{{"udp", 500}, {"tcp", 50}} {
					c := &dns.Client{Net: tr.name, Timeout: 2 * time.Second}
					for i := range tr.n {
						r, err := ask(c, fmt.Sprintf("q%d.example.", i), dns.TypeA)
						if err != nil {
							return fmt.Errorf("%s question %d: %w", tr.name, i, err)
						}
						want := net.IPv4(10, 0, byte(i/256), byte(i%256))
						if len(r.Answer) != 1 || !r.Answer[0].(*dns.A).A.Equal(want) {
							return fmt.Errorf("%s question %d: answer %v, want %v", tr.name, i, r.Answer, want)
						}
					}
				}
				r, err := ask(&dns.Client{Net: "udp", Timeout: 2 * time.Second}, "big.example.", dns.TypeTXT)
				if err != nil {
					return fmt.Errorf("big answer over UDP: %w", err)
				}
				if !r.Truncated || len(r.Answer) >= 20 {
					return fmt.Errorf("big answer over UDP: truncated %v with %d records, want the TC flag and fewer than 20", r.Truncated, len(r.Answer))
				}
				r, err = ask(&dns.Client{Net: "tcp", Timeout: 2 * time.Second}, "big.example.", dns.TypeTXT)
				if err != nil {
					return fmt.Errorf("big answer over TCP: %w", err)
				}
				if r.Truncated || len(r.Answer) != 20 {
					return fmt.Errorf("big answer over TCP: truncated %v with %d records, want all 20", r.Truncated, len(r.Answer))
				}
				for i, rr := range r.Answer {
					if txt := rr.(*dns.TXT).Txt; len(txt) != 1 || !strings.HasPrefix(txt[0], fmt.Sprintf("%03d", i)) || len(txt[0]) != 200 {
						return fmt.Errorf("big answer over TCP: record %d is %q", i, txt)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
