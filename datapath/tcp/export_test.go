package tcp

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// EndpointStates lists the states of gVisor's registered endpoints.
func EndpointStates(s *Stack) []string {
	var out []string
	for _, e := range s.gs.RegisteredEndpoints() {
		if te, ok := e.(*tcp.Endpoint); ok {
			id := te.TransportEndpointInfo.ID
			out = append(out, fmt.Sprintf("%s %s:%d<-%s:%d", te.EndpointState(), id.LocalAddress, id.LocalPort, id.RemoteAddress, id.RemotePort))
		}
	}
	return out
}

// EndpointRemotePorts lists the remote ports of gVisor's connected endpoints.
func EndpointRemotePorts(s *Stack) []uint16 {
	var out []uint16
	for _, e := range s.gs.RegisteredEndpoints() {
		if te, ok := e.(*tcp.Endpoint); ok && te.TransportEndpointInfo.ID.RemotePort != 0 {
			out = append(out, te.TransportEndpointInfo.ID.RemotePort)
		}
	}
	return out
}

// TrackedWindows counts the connections whose peer's window the link
// follows.
func TrackedWindows(s *Stack) int { return int(s.link.win.n.Load()) }

// BufferGroups counts the groups whose buffers the Stack accounts.
func BufferGroups(s *Stack) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.groupBuf)
}

// KeepaliveOf is c's keepalive as its app set it, read from its gVisor
// endpoint.
func KeepaliveOf(c *Conn) Keepalive { return c.ka.get(c.ep) }
