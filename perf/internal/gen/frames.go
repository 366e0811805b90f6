package gen

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Header sizes of the frames the generator builds.
const (
	EthHeaderLen  = 14
	IPv4HeaderLen = 20
	UDPHeaderLen  = 8
	// HeadersLen is the bytes in front of a UDP payload in a frame.
	HeadersLen = EthHeaderLen + IPv4HeaderLen + UDPHeaderLen
	// MaxPayload is the largest UDP payload that fits a 1500-byte MTU.
	MaxPayload = 1500 - IPv4HeaderLen - UDPHeaderLen
)

// ErrBadConfig is returned for a frame or generator configuration that
// cannot be used.
var ErrBadConfig = errors.New("gen: bad configuration")

// FrameSpec describes the frames of a run: one per flow.
type FrameSpec struct {
	SrcMAC, DstMAC net.HardwareAddr
	SrcIP, DstIP   netip.Addr // IPv4 only
	// SrcPortBase is the UDP source port of flow 0; flow i uses
	// SrcPortBase+i.
	SrcPortBase uint16
	DstPort     uint16
	// Flows is the number of distinct flows (source ports); at least 1.
	Flows int
	// Payload is the UDP payload length in bytes, 0..MaxPayload.
	Payload int
}

func (s FrameSpec) check() error {
	switch {
	case len(s.SrcMAC) != 6 || len(s.DstMAC) != 6:
		return fmt.Errorf("%w: MAC addresses must be 6 bytes", ErrBadConfig)
	case !s.SrcIP.Is4() || !s.DstIP.Is4():
		return fmt.Errorf("%w: addresses must be IPv4", ErrBadConfig)
	case s.Flows < 1 || s.Flows > 65536-int(s.SrcPortBase):
		return fmt.Errorf("%w: %d flows from source port %d", ErrBadConfig, s.Flows, s.SrcPortBase)
	case s.Payload < 0 || s.Payload > MaxPayload:
		return fmt.Errorf("%w: payload %d not in 0..%d", ErrBadConfig, s.Payload, MaxPayload)
	case s.DstPort == 0:
		return fmt.Errorf("%w: destination port 0", ErrBadConfig)
	}
	return nil
}

// MinFrameLen is the shortest Ethernet frame (without FCS); shorter frames
// are padded with zeros after the UDP payload.
const MinFrameLen = 60

// FrameLen is the length of every frame of s.
func (s FrameSpec) FrameLen() int { return max(MinFrameLen, HeadersLen+s.Payload) }

// BuildFrames returns one complete frame per flow, with correct IPv4 and UDP
// checksums. The payload of flow i carries i in its first bytes (as far as
// they go) and a fixed pattern after.
func BuildFrames(s FrameSpec) ([][]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	frames := make([][]byte, s.Flows)
	payload := make([]byte, s.Payload)
	for i := range payload {
		payload[i] = byte(i)
	}
	for f := range s.Flows {
		for b := 0; b < 4 && b < len(payload); b++ {
			payload[b] = byte(f >> (8 * (3 - b)))
		}
		eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{
			Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
			Flags: layers.IPv4DontFragment,
			SrcIP: s.SrcIP.AsSlice(), DstIP: s.DstIP.AsSlice(),
		}
		udp := &layers.UDP{SrcPort: layers.UDPPort(int(s.SrcPortBase) + f), DstPort: layers.UDPPort(s.DstPort)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, fmt.Errorf("build frame: %w", err)
		}
		buf := gopacket.NewSerializeBuffer()
		opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(payload)); err != nil {
			return nil, fmt.Errorf("build frame: %w", err)
		}
		frames[f] = append([]byte(nil), buf.Bytes()...)
	}
	return frames, nil
}
