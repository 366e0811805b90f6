package gen

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func testSpec() FrameSpec {
	return FrameSpec{
		SrcMAC:      net.HardwareAddr{0x02, 0, 0, 0, 0, 1},
		DstMAC:      net.HardwareAddr{0x02, 0, 0, 0, 0, 2},
		SrcIP:       netip.MustParseAddr("10.77.0.1"),
		DstIP:       netip.MustParseAddr("10.77.0.2"),
		SrcPortBase: 40000,
		DstPort:     9000,
		Flows:       8,
	}
}

func TestBuildFramesParseWithValidChecksums(t *testing.T) {
	for _, payload := range []int{0, 1, 18, 64, 512, 1472} {
		s := testSpec()
		s.Payload = payload
		frames, err := BuildFrames(s)
		if err != nil {
			t.Fatalf("payload %d: %v", payload, err)
		}
		if len(frames) != s.Flows {
			t.Fatalf("payload %d: %d frames, want %d", payload, len(frames), s.Flows)
		}
		for f, fr := range frames {
			if len(fr) != s.FrameLen() {
				t.Fatalf("payload %d flow %d: frame of %d bytes, want %d", payload, f, len(fr), s.FrameLen())
			}
			pkt := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Fatalf("payload %d flow %d: decode: %v", payload, f, el.Error())
			}
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if ip == nil || udp == nil {
				t.Fatalf("payload %d flow %d: missing IPv4 or UDP layer", payload, f)
			}
			if eth.SrcMAC.String() != s.SrcMAC.String() || eth.DstMAC.String() != s.DstMAC.String() {
				t.Errorf("flow %d: MACs %v > %v", f, eth.SrcMAC, eth.DstMAC)
			}
			if !ip.SrcIP.Equal(s.SrcIP.AsSlice()) || !ip.DstIP.Equal(s.DstIP.AsSlice()) || int(ip.Length) != IPv4HeaderLen+UDPHeaderLen+payload {
				t.Errorf("flow %d: ip %v > %v len %d", f, ip.SrcIP, ip.DstIP, ip.Length)
			}
			if int(udp.SrcPort) != int(s.SrcPortBase)+f || int(udp.DstPort) != int(s.DstPort) || int(udp.Length) != UDPHeaderLen+payload {
				t.Errorf("flow %d: udp %d > %d len %d", f, udp.SrcPort, udp.DstPort, udp.Length)
			}
			if len(udp.Payload) != payload {
				t.Errorf("flow %d: payload %d bytes, want %d", f, len(udp.Payload), payload)
			}
			// A checksum over a header including its own checksum field is
			// zero (all ones before complement) when the field is right.
			if c := onesSum(fr[EthHeaderLen:EthHeaderLen+IPv4HeaderLen], 0); c != 0xffff {
				t.Errorf("flow %d: IPv4 header checksum invalid (sum %#x)", f, c)
			}
			pseudo := uint32(0)
			for _, b := range [][]byte{s.SrcIP.AsSlice(), s.DstIP.AsSlice()} {
				pseudo += (uint32(b[0])<<8 | uint32(b[1])) + (uint32(b[2])<<8 | uint32(b[3]))
			}
			pseudo += 17 + uint32(UDPHeaderLen+payload)
			if udp.Checksum == 0 {
				t.Errorf("flow %d: UDP checksum left out", f)
			}
			if c := onesSum(fr[EthHeaderLen+IPv4HeaderLen:HeadersLen+payload], pseudo); c != 0xffff {
				t.Errorf("flow %d: UDP checksum invalid (sum %#x)", f, c)
			}
		}
	}
}

// onesSum is the 16-bit one's complement sum of b plus start.
func onesSum(b []byte, start uint32) uint16 {
	s := start
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestBuildFramesRejectsBadSpecs(t *testing.T) {
	for name, mut := range map[string]func(*FrameSpec){
		"no flows":      func(s *FrameSpec) { s.Flows = 0 },
		"too many":      func(s *FrameSpec) { s.SrcPortBase = 65530; s.Flows = 7 },
		"big payload":   func(s *FrameSpec) { s.Payload = MaxPayload + 1 },
		"neg payload":   func(s *FrameSpec) { s.Payload = -1 },
		"short mac":     func(s *FrameSpec) { s.DstMAC = s.DstMAC[:5] },
		"ipv6":          func(s *FrameSpec) { s.DstIP = netip.MustParseAddr("fd77::2") },
		"zero dst port": func(s *FrameSpec) { s.DstPort = 0 },
	} {
		s := testSpec()
		mut(&s)
		if _, err := BuildFrames(s); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: err %v, want ErrBadConfig", name, err)
		}
	}
}

func TestNewXDPRejectsBadConfig(t *testing.T) {
	spec := testSpec()
	if _, err := NewXDP(Config{FrameSpec: spec}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("ifindex 0: err %v, want ErrBadConfig", err)
	}
	spec.Flows = 0
	if _, err := NewXDP(Config{FrameSpec: spec, IfIndex: 1}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("no flows: err %v, want ErrBadConfig", err)
	}
}
