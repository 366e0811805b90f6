package nstest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Ping sends ICMP (or ICMPv6) echo requests from h to dst through a raw
// socket until a matching reply arrives, up to three tries a second apart.
// It goes through the kernel of both hosts, ARP/ND included.
func (h *Host) Ping(dst netip.Addr) error {
	return h.Do(func() error {
		fam, proto := unix.AF_INET6, unix.IPPROTO_ICMPV6
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16()}
		if dst.Is4() {
			fam, proto = unix.AF_INET, unix.IPPROTO_ICMP
			sa = &unix.SockaddrInet4{Addr: dst.As4()}
		}
		fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(int64(time.Second))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		const id = 0x5151
		buf := make([]byte, 2048)
		for seq := uint16(1); seq <= 3; seq++ {
			req := []byte{8, 0, 0, 0, id >> 8, id & 0xff, byte(seq >> 8), byte(seq), 'x', 's', 'e', 's', 's'}
			if dst.Is6() {
				req[0] = 128 // echo request; the kernel fills in the ICMPv6 checksum
			} else {
				binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
			}
			if err := unix.Sendto(fd, req, 0, sa); err != nil {
				return fmt.Errorf("send echo: %w", err)
			}
			for {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					break // timed out: try again
				}
				b := buf[:n]
				reply := byte(129)
				if !dst.Is6() {
					if n < 20 || int(b[0]&0xf)*4 > n {
						continue
					}
					b, reply = b[int(b[0]&0xf)*4:], 0
				}
				if len(b) >= 8 && b[0] == reply && b[4] == id>>8 && b[5] == id&0xff {
					return nil
				}
			}
		}
		return fmt.Errorf("no echo reply from %v", dst)
	})
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
