package nstest

import (
	"net"
	"net/netip"
)

// ListenUDP opens a UDP socket of the host's kernel bound to addr, with a
// receive buffer of rcvbuf bytes (0: the kernel's default; the kernel
// caps it at net.core.rmem_max).
func (h *Host) ListenUDP(addr netip.AddrPort, rcvbuf int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err == nil && rcvbuf > 0 {
			if err = c.SetReadBuffer(rcvbuf); err != nil {
				c.Close()
			}
		}
		return err
	})
	return c, err
}
