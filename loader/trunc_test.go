package loader

import (
	"fmt"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// region is a byte range of a frame and the counter a frame cut inside it
// (its first missing byte in the range) must move.
type region struct {
	end    int // exclusive
	reason func(*Counters)
}

// TestProgramTruncation cuts complete frames at every length from the
// Ethernet header on and checks that each cut is passed to the kernel and
// counted as malformed with the reason of the header it falls in; the
// complete frame is a hit.
func TestProgramTruncation(t *testing.T) {
	o := progEnv(t)

	// 802.1Q (a priority tag: VLAN id 0, the untagged interface's; a
	// VLAN's frame is passed at its tag) / IPv4 with 8 bytes of options /
	// UDP / payload.
	u, i4 := udp(5556, 9000), ip4(layers.IPProtocolUDP)
	u.SetNetworkLayerForChecksum(i4)
	f4 := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{Priority: 5, Type: layers.EthernetTypeIPv4}, i4, u, payload)
	f4 = withIPv4Options(f4, 18, []byte{1, 1, 1, 1, 1, 1, 1, 0})

	// 802.1ad / 802.1Q (priority tags) / IPv6 / hop-by-hop (16) / destination options (8) / TCP / payload.
	tc, i6 := tcp(40000, 8080), ip6(layers.IPProtocolIPv6HopByHop)
	tc.SetNetworkLayerForChecksum(i6)
	f6 := serialize(t, eth(layers.EthernetTypeQinQ),
		&layers.Dot1Q{Priority: 1, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{Priority: 2, Type: layers.EthernetTypeIPv6},
		i6, ext6(layers.IPProtocolIPv6Destination, 1), ext6(layers.IPProtocolTCP, 0), tc, payload)

	// Untagged IPv4 / TCP.
	t4 := tcp4Frame(t, 5556, 80)
	// Untagged IPv6 / UDP.
	u6 := udp6Frame(t, 5556, 9000)

	for _, f := range []struct {
		name    string
		frame   []byte
		hit     func(*Counters)
		regions []region
	}{
		{"vlan ipv4 options udp", f4, exactHit, []region{
			{18, truncVLAN}, {18 + 28, truncIPv4}, {18 + 28 + 8, truncUDP}, {len(f4), badLength}}},
		{"qinq ipv6 ext tcp", f6, estHit, []region{
			{22, truncVLAN}, {22 + 40, truncIPv6}, {22 + 40 + 16 + 8, truncExt}, {22 + 64 + 20, truncTCP}, {len(f6), badLength}}},
		{"ipv4 tcp", t4, exactHit, []region{{14 + 20, truncIPv4}, {14 + 20 + 20, truncTCP}, {len(t4), badLength}}},
		{"ipv6 udp", u6, exactHit, []region{{14 + 40, truncIPv6}, {14 + 40 + 8, truncUDP}, {len(u6), badLength}}},
	} {
		t.Run(f.name, func(t *testing.T) {
			check := func(n int, want uint32, cnt Counters) {
				t.Helper()
				before, _ := o.Counters.Read()
				got := runXDP(t, o.Program(), f.frame[:n])
				after, _ := o.Counters.Read()
				if got != want {
					t.Errorf("cut at %d: verdict %d, want %d", n, got, want)
				}
				if d := after.Sub(before); d != cnt {
					t.Errorf("cut at %d: counters moved by%s, want%s", n, fmtCounters(d), fmtCounters(cnt))
				}
			}
			// BPF_PROG_TEST_RUN refuses frames shorter than an
			// Ethernet header, so cuts start at 14.
			r := 0
			for n := 14; n < len(f.frame); n++ {
				for n >= f.regions[r].end {
					r++
				}
				check(n, xdpPass, malformed(f.regions[r].reason))
			}
			check(len(f.frame), xdpRedirect, redirected(f.hit))
		})
	}
}

// TestFrameHelpers pins down frames the table tests depend on.
func TestFrameHelpers(t *testing.T) {
	u4 := udp4Frame(t, 1, 2)
	o := withIPv4Options(u4, 14, make([]byte, 40))
	if o[14] != 0x4f || len(o) != len(u4)+40 {
		t.Fatalf("ihl byte %#x, len %d", o[14], len(o))
	}
	p := gopacket.NewPacket(o, layers.LayerTypeEthernet, gopacket.Default)
	orig := gopacket.NewPacket(u4, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ok || ip.Length != orig.Length+40 {
		t.Fatalf("options frame does not parse: %v", p)
	}
	if l := p.Layer(layers.LayerTypeUDP); l == nil {
		t.Fatalf("no udp after options: %v", p)
	}
	e := ext6(layers.IPProtocolUDP, 2)
	if len(e) != 24 || e[3] != 20 {
		t.Fatal(fmt.Sprint(e))
	}
}
