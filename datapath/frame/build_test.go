package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var buildSpecs = []struct {
	name string
	spec Spec
}{
	{"ipv4", Spec{DstMAC: macB, SrcMAC: macA, Src: ip4A, Dst: ip4B, SrcPort: 9000, DstPort: 4000}},
	{"ipv4-df-tos-ttl", Spec{DstMAC: macB, SrcMAC: macA, Src: ip4A, Dst: ip4B, SrcPort: 65535, DstPort: 1, DontFragment: true, TOS: 0xb8, HopLimit: 7}},
	{"ipv4-vlan", Spec{DstMAC: macB, SrcMAC: macA, VLAN: true, VLANTCI: 0x6123, Src: ip4A, Dst: ip4B, SrcPort: 9000, DstPort: 4000}},
	{"ipv6", Spec{DstMAC: macB, SrcMAC: macA, Src: ip6A, Dst: ip6B, SrcPort: 9000, DstPort: 4000}},
	{"ipv6-vlan-flow", Spec{DstMAC: macB, SrcMAC: macA, VLAN: true, VLANTCI: 42, Src: ip6A, Dst: ip6B, SrcPort: 1, DstPort: 2, FlowLabel: 0xabcde, TOS: 0x10, HopLimit: 255}},
}

// gopacketBuild serializes the frame spec describes with gopacket, for a
// byte-for-byte comparison.
func gopacketBuild(t *testing.T, s Spec, id uint16, payload []byte) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC}
	ls = append(ls, eth)
	prev := &eth.EthernetType
	if s.VLAN {
		*prev = layers.EthernetTypeDot1Q
		d := &layers.Dot1Q{Priority: uint8(s.VLANTCI >> 13), DropEligible: s.VLANTCI&0x1000 != 0, VLANIdentifier: s.VLANTCI & 0xfff}
		ls = append(ls, d)
		prev = &d.Type
	}
	ttl := s.HopLimit
	if ttl == 0 {
		ttl = 64
	}
	var nl gopacket.NetworkLayer
	if s.Src.Is4() {
		*prev = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: s.TOS, TTL: ttl, Id: id, Protocol: layers.IPProtocolUDP, SrcIP: s.Src.AsSlice(), DstIP: s.Dst.AsSlice()}
		if s.DontFragment {
			ip.Flags = layers.IPv4DontFragment
		}
		ls = append(ls, ip)
		nl = ip
	} else {
		*prev = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, TrafficClass: s.TOS, FlowLabel: s.FlowLabel, HopLimit: ttl, NextHeader: layers.IPProtocolUDP, SrcIP: s.Src.AsSlice(), DstIP: s.Dst.AsSlice()}
		ls = append(ls, ip)
		nl = ip
	}
	u := &layers.UDP{SrcPort: layers.UDPPort(s.SrcPort), DstPort: layers.UDPPort(s.DstPort)}
	if err := u.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	ls = append(ls, u, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBuildAgainstGopacket(t *testing.T) {
	big := make([]byte, 1472)
	for i := range big {
		big[i] = byte(i*13 + 5)
	}
	for _, sc := range buildSpecs {
		t.Run(sc.name, func(t *testing.T) {
			var tpl Template
			if err := tpl.Prepare(sc.spec); err != nil {
				t.Fatal(err)
			}
			dst := make([]byte, 2048)
			for _, n := range []int{0, 1, 2, 3, 64, 65, 1471, 1472} {
				pl := big[:n]
				fl, err := tpl.Build(dst, pl)
				if err != nil {
					t.Fatal(err)
				}
				f := dst[:fl]
				gp := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
				if el := gp.ErrorLayer(); el != nil && gp.Layer(layers.LayerTypeUDP) == nil {
					t.Fatalf("len %d: gopacket: %v", n, el.Error())
				}
				if ip, ok := gp.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
					if _, res := ip.VerifyChecksum(); !res.Valid {
						t.Fatalf("len %d: IPv4 checksum %#x, want %#x", n, res.Actual, res.Correct)
					}
				}
				u, ok := gp.Layer(layers.LayerTypeUDP).(*layers.UDP)
				if !ok {
					t.Fatalf("len %d: gopacket found no UDP", n)
				}
				if err := u.SetNetworkLayerForChecksum(gp.NetworkLayer()); err != nil {
					t.Fatal(err)
				}
				verr, res := u.VerifyChecksum()
				if verr != nil {
					t.Fatalf("len %d: %v", n, verr)
				}
				if !res.Valid || u.Checksum == 0 {
					t.Fatalf("len %d: UDP checksum %#x, want %#x", n, res.Actual, res.Correct)
				}
				if uint16(u.SrcPort) != sc.spec.SrcPort || uint16(u.DstPort) != sc.spec.DstPort || !bytes.Equal(u.Payload, pl) {
					t.Fatalf("len %d: UDP %d->%d payload %d bytes", n, u.SrcPort, u.DstPort, len(u.Payload))
				}
				var id uint16
				if sc.spec.Src.Is4() {
					id = uint16(f[tpl.l3off+4])<<8 | uint16(f[tpl.l3off+5])
				}
				// gopacket pads frames to the 60-byte Ethernet minimum; the
				// builder leaves padding to the NIC.
				want := gopacketBuild(t, sc.spec, id, pl)
				if len(want) > len(f) && len(want) == 60 && !bytes.ContainsFunc(want[len(f):], func(r rune) bool { return r != 0 }) {
					want = want[:len(f)]
				}
				if !bytes.Equal(f, want) {
					t.Fatalf("len %d:\n got %x\nwant %x", n, f, want)
				}
				var p Packet
				if r := Decode(f, &p); r != OK || p.PayloadOff != tpl.HeaderLen() || p.PayloadLen != n {
					t.Fatalf("len %d: Decode %v off %d len %d", n, r, p.PayloadOff, p.PayloadLen)
				}
				// In place: the payload already at HeaderLen.
				g := make([]byte, 2048)
				copy(g[tpl.HeaderLen():], pl)
				gl, err := tpl.BuildInPlace(g, n)
				if err != nil || gl != fl {
					t.Fatalf("BuildInPlace = %d, %v", gl, err)
				}
				if r := Decode(g[:gl], &p); r != OK || !bytes.Equal(p.Payload(g), pl) {
					t.Fatalf("BuildInPlace frame: %v", r)
				}
			}
			if a := testing.AllocsPerRun(100, func() { tpl.Build(dst, big[:64]) }); a != 0 {
				t.Errorf("Build allocates %v times per run", a)
			}
			if a := testing.AllocsPerRun(100, func() { tpl.BuildInPlace(dst, 64) }); a != 0 {
				t.Errorf("BuildInPlace allocates %v times per run", a)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	var tpl Template
	if _, err := tpl.Build(make([]byte, 100), nil); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("zero Template: %v", err)
	}
	for _, s := range []Spec{
		{DstMAC: macB[:5], SrcMAC: macA, Src: ip4A, Dst: ip4B},
		{DstMAC: macB, SrcMAC: macA, Src: ip4A, Dst: ip6B},
		{DstMAC: macB, SrcMAC: macA, Dst: ip4B},
		{DstMAC: macB, SrcMAC: macA, Src: ip4A, Dst: ip4B, VLAN: true, VLANTCI: 0xfff},
		{DstMAC: macB, SrcMAC: macA, Src: ip6A, Dst: ip6B, FlowLabel: 1 << 20},
	} {
		if err := tpl.Prepare(s); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("Prepare(%+v) = %v, want ErrInvalidSpec", s, err)
		}
	}
	mapped := Spec{DstMAC: macB, SrcMAC: macA, Src: netip.MustParseAddr("::ffff:10.77.0.1"), Dst: ip4B}
	if err := tpl.Prepare(mapped); err != nil {
		t.Fatalf("IPv4-mapped source: %v", err)
	}
	if err := tpl.Prepare(buildSpecs[0].spec); err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Build(make([]byte, 50), make([]byte, 10)); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("short buffer: %v", err)
	}
	if _, err := tpl.BuildInPlace(make([]byte, 50), 10); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("short buffer in place: %v", err)
	}
	if _, err := tpl.Build(make([]byte, 70000), make([]byte, 65536-28)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("too long: %v", err)
	}
	if _, err := tpl.BuildInPlace(make([]byte, 100), -1); !errors.Is(err, ErrTooLong) {
		t.Fatalf("negative length: %v", err)
	}
	if n, err := tpl.Build(make([]byte, 70000), make([]byte, 65535-28)); err != nil || n != 14+65535 {
		t.Fatalf("largest datagram: %d, %v", n, err)
	}
}

// TestTemplateIPv4IDsStartApart: templates of one destination (here eight
// source ports) give their first datagrams identifications of their own,
// not each 1, so that fragments of different flows do not share one.
func TestTemplateIPv4IDsStartApart(t *testing.T) {
	ids := map[uint16]bool{}
	for port := uint16(1000); port < 1008; port++ {
		var tpl Template
		if err := tpl.Prepare(Spec{DstMAC: make([]byte, 6), SrcMAC: make([]byte, 6), Src: netip.MustParseAddr("10.0.0.1"),
			Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: port, DstPort: 53}); err != nil {
			t.Fatal(err)
		}
		f := make([]byte, 128)
		if _, err := tpl.Build(f, []byte("x")); err != nil {
			t.Fatal(err)
		}
		ids[binary.BigEndian.Uint16(f[tpl.l3off+4:])] = true
	}
	if len(ids) < 2 {
		t.Fatalf("eight templates of one destination started at the same identification: %v", ids)
	}
}
