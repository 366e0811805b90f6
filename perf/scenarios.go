package main

import (
	"cmp"
	"fmt"
	"slices"
)

// Kind is what a scenario measures.
type Kind string

const (
	// KindGenOnly runs the generator into host B with nothing attached and
	// frames addressed to a MAC that is not B's: B's kernel drops them at
	// IP input (PACKET_OTHERHOST), the earliest drop on the kernel path
	// that still takes the frames off A's ring. The machine's busy time is
	// the generator (ring, sendto, skb build) plus veth hand-over and that
	// drop; no socket, no XDP. (With B's end down the tx ring stalls: the
	// kernel hands the refused frame back instead of releasing it.)
	KindGenOnly Kind = "gen-only"
	// KindReceive is UDP from the generator in host A into a receiver in B.
	KindReceive Kind = "udp-receive"
	// KindEcho is UDP round trips from kernel sockets in A to an echo
	// server in B at a fixed rate, timestamps in the payload.
	KindEcho Kind = "udp-echo"
	// KindCutThrough is messages between two local apps.
	KindCutThrough Kind = "cut-through"
	// KindTCPRR is TCP request/response: a kernel client in host A sends
	// Payload bytes on each of Flows connections and waits for the same
	// back, one request in flight per connection, flat out.
	KindTCPRR Kind = "tcp-rr"
	// KindTCPCRR is TCP connect/request/close: Flows client goroutines in
	// host A each open a connection, send one request, read its response
	// and close, one connection after another.
	KindTCPCRR Kind = "tcp-crr"
	// KindTCPRecv is bulk TCP into host B: the client writes flat out on
	// Flows connections, the server reads and counts.
	KindTCPRecv Kind = "tcp-bulk-recv"
	// KindTCPSend is bulk TCP out of host B: the server writes flat out,
	// the client reads and counts.
	KindTCPSend Kind = "tcp-bulk-send"
)

// Scenario is one row of the results: one implementation under one load.
type Scenario struct {
	Name    string `json:"name"`  // unique, e.g. "udp64-q2-f16/kernel"
	Group   string `json:"group"` // rows compared with one another, e.g. "udp64-q2-f16"
	Kind    Kind   `json:"kind"`
	Impl    string `json:"impl"`
	Payload int    `json:"payload"`
	Queues  int    `json:"queues"`
	Flows   int    `json:"flows"`
	// Rate is the offered load in packets (or requests) per second; 0 is
	// flat out.
	Rate uint64 `json:"rate"`
	// Gen is the generator of a UDP receive or gen-only row: genPacket
	// or genXDP.
	Gen string `json:"gen,omitempty"`
}

// echoBigPayload is the payload of the fragmented echo rows.
const echoBigPayload = 9000

// maxUDPPayload is the largest IPv4 UDP payload: the buffer of a
// datagram read.
const maxUDPPayload = 65507

// Plan is what the command line asks for.
type Plan struct {
	Payloads []int
	Queues   int    // N: the multi-queue configuration
	Flows    int    // F: the multi-flow configuration
	Rate     uint64 // generator rate for receive scenarios, 0 = flat out
	EchoRate uint64 // request rate of the echo scenarios
	Quick    bool
	// TCPOnly plans the TCP scenarios alone (--tcp).
	TCPOnly bool
	// Gen is the generator of the UDP receive rows: genPacket, genXDP or
	// genAuto ("" is genAuto).
	Gen string
	// PlaceUDP: the UDP receive rows are placed (--place-udp), which
	// auto gives the packet generator.
	PlaceUDP bool
}

// rowGen is the generator a UDP receive row on q queues gets from --gen.
// Auto takes XDP frames where there is one queue: veth's ndo_xdp_xmit puts
// a frame on the peer's queue of the sending CPU, not of its flow's hash,
// so XDP frames cannot spread flows over queues; the packet socket's
// frames are spread by their hash. Placed rows (--place-udp) get the
// packet socket too: there B's receive (for xsessiond its NAPI thread)
// shares one CPU with the receiver while the generator has the other, and
// XDP frames, which cost the generator almost nothing, flood it (a --quick
// run lost 79% at B's ring) where the packet generator's own cost paces
// it.
func (p Plan) rowGen(q int) string {
	switch {
	case p.Gen == genPacket || p.Gen == genXDP:
		return p.Gen
	case q == 1 && !p.PlaceUDP:
		return genXDP
	}
	return genPacket
}

// tcpScenarios are the TCP rows, each with the kernel baseline before
// xsessiond: request/response of 64 bytes over 1 and 32 connections,
// connect/request/close from 4 clients, bulk into and out of host B on one
// connection. --quick runs the same rows once.
func tcpScenarios() []Scenario {
	var rows []Scenario
	for _, t := range []struct {
		kind        Kind
		group       string
		payload, cn int
	}{
		{KindTCPRR, "tcprr64-c1", tcpReqSize, 1},
		{KindTCPRR, "tcprr64-c32", tcpReqSize, 32},
		{KindTCPCRR, "tcpcrr64-c4", tcpReqSize, 4},
		{KindTCPRecv, "tcprecv-c1", tcpBulkChunk, 1},
		{KindTCPSend, "tcpsend-c1", tcpBulkChunk, 1},
	} {
		for _, impl := range []string{ImplKernel, ImplXsessiond} {
			rows = append(rows, Scenario{Name: t.group + "/" + impl, Group: t.group, Kind: t.kind, Impl: impl,
				Payload: t.payload, Queues: 1, Flows: t.cn})
		}
	}
	return rows
}

// DefaultPayloads are the UDP payload sizes of the receive scenarios.
var DefaultPayloads = []int{64, 512, 1472}

type load struct{ payload, queues, flows int }

func (l load) group(kind string) string {
	return fmt.Sprintf("%s%d-q%d-f%d", kind, l.payload, l.queues, l.flows)
}

// queueSteps is 1, 2, 4, … below n, then n.
func queueSteps(n int) []int {
	var s []int
	for q := 1; q < n; q *= 2 {
		s = append(s, q)
	}
	return append(s, n)
}

// Scenarios expands a plan into the table of rows, ordered so that rows on
// the same rig (queue count) run together.
func Scenarios(p Plan) []Scenario {
	if p.Queues < 1 {
		p.Queues = 1
	}
	if p.Flows < 1 {
		p.Flows = 1
	}
	var rows []Scenario
	add := func(kind Kind, impl string, l load, rate uint64, grp string) {
		s := Scenario{
			Name: grp + "/" + impl, Group: grp, Kind: kind, Impl: impl,
			Payload: l.payload, Queues: l.queues, Flows: l.flows, Rate: rate,
		}
		if kind == KindGenOnly || kind == KindReceive {
			s.Gen = p.rowGen(l.queues)
		}
		rows = append(rows, s)
	}
	if p.TCPOnly {
		return tcpScenarios()
	}
	if p.Quick {
		// The generator alone first: its cost per packet, taken out of
		// the receive rows' (rx ns/pkt), is the quick line's receive
		// cost ratio.
		l := load{64, 1, 1}
		add(KindGenOnly, ImplGenOnly, l, p.Rate, l.group("udp"))
		add(KindReceive, ImplKernel, l, p.Rate, l.group("udp"))
		add(KindReceive, ImplXsessiond, l, p.Rate, l.group("udp"))
		return append(rows, tcpScenarios()...)
	}

	// Receive: every payload at 1 queue/1 flow and N queues/F flows; at
	// 64 bytes also 1 queue/F flows and every queue step for the scaling
	// plot.
	var loads []load
	seen := map[load]bool{}
	addLoad := func(l load) {
		if !seen[l] {
			seen[l] = true
			loads = append(loads, l)
		}
	}
	for _, pl := range p.Payloads {
		addLoad(load{pl, 1, 1})
		addLoad(load{pl, p.Queues, p.Flows})
	}
	if slices.Contains(p.Payloads, 64) {
		for _, q := range queueSteps(p.Queues) {
			addLoad(load{64, q, p.Flows})
		}
	}
	for _, l := range loads {
		g := l.group("udp")
		add(KindGenOnly, ImplGenOnly, l, p.Rate, g)
		add(KindReceive, ImplKernel, l, p.Rate, g)
		if l.queues > 1 {
			add(KindReceive, ImplKernelReuseport, l, p.Rate, g)
		}
		add(KindReceive, ImplXDPDrop, l, p.Rate, g)
		add(KindReceive, ImplXsessiond, l, p.Rate, g)
	}
	echo := load{64, 1, 1}
	add(KindEcho, ImplKernel, echo, p.EchoRate, echo.group("echo"))
	add(KindEcho, ImplXsessiond, echo, p.EchoRate, echo.group("echo"))
	// Datagrams past the MTU: 9,000 bytes, fragmented both ways (seven
	// frames each), which xsessiond takes through the kernel's reassembly
	// and fragmentation (datapath/kernelpath.go), at a tenth of the rate.
	big := load{echoBigPayload, 1, 1}
	add(KindEcho, ImplKernel, big, max(1, p.EchoRate/10), big.group("echo"))
	add(KindEcho, ImplXsessiond, big, max(1, p.EchoRate/10), big.group("echo"))
	for _, pl := range []int{64, 1472} {
		l := load{pl, 1, 1}
		add(KindCutThrough, ImplSocketpair, l, 0, l.group("ct"))
		add(KindCutThrough, ImplXsessiond, l, 0, l.group("ct"))
	}
	rows = append(rows, tcpScenarios()...)
	slices.SortStableFunc(rows, func(a, b Scenario) int { return cmp.Compare(a.Queues, b.Queues) })
	return rows
}
