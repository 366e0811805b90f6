package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQueueSteps(t *testing.T) {
	for n, want := range map[int][]int{1: {1}, 2: {1, 2}, 4: {1, 2, 4}, 6: {1, 2, 4, 6}} {
		if got := queueSteps(n); !slices.Equal(got, want) {
			t.Errorf("queueSteps(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestScenariosDefault(t *testing.T) {
	rows := Scenarios(Plan{Payloads: DefaultPayloads, Queues: 4, Flows: 16, EchoRate: 10000})
	names := map[string]bool{}
	impls := map[string]map[string]bool{} // group → impls
	for i, r := range rows {
		if names[r.Name] {
			t.Errorf("duplicate row %s", r.Name)
		}
		names[r.Name] = true
		if impls[r.Group] == nil {
			impls[r.Group] = map[string]bool{}
		}
		impls[r.Group][r.Impl] = true
		if i > 0 && r.Queues < rows[i-1].Queues {
			t.Errorf("rows not ordered by queues at %s", r.Name)
		}
		if r.Kind == KindReceive && r.Impl == ImplKernelReuseport && r.Queues == 1 {
			t.Errorf("reuseport row with one queue: %s", r.Name)
		}
	}
	for _, want := range []string{
		"udp64-q1-f1/kernel", "udp64-q1-f1/xdp-drop", "udp64-q1-f1/xsessiond", "udp64-q1-f1/gen-only",
		"udp512-q4-f16/kernel-reuseport", "udp1472-q4-f16/xsessiond", "udp64-q1-f16/kernel",
		"udp64-q2-f16/xdp-drop", // a scaling step
		"echo64-q1-f1/kernel", "echo64-q1-f1/xsessiond", "echo9000-q1-f1/kernel", "echo9000-q1-f1/xsessiond", "ct64-q1-f1/socketpair", "ct1472-q1-f1/xsessiond",
		"tcprr64-c1/kernel", "tcprr64-c32/xsessiond", "tcpcrr64-c4/kernel", "tcprecv-c1/xsessiond", "tcpsend-c1/kernel",
	} {
		if !names[want] {
			t.Errorf("no row %s", want)
		}
	}
	for g, im := range impls {
		if im[ImplXsessiond] && !im[ImplKernel] && !im[ImplSocketpair] {
			t.Errorf("group %s has xsessiond but no baseline", g)
		}
		if strings.HasPrefix(g, "udp") && !im[ImplGenOnly] {
			t.Errorf("receive group %s has no gen-only row", g)
		}
	}
}

func TestScenariosQuick(t *testing.T) {
	rows := Scenarios(Plan{Payloads: DefaultPayloads, Queues: 4, Flows: 16, Quick: true})
	if len(rows) != 13 || rows[0].Impl != ImplGenOnly || rows[1].Impl != ImplKernel || rows[2].Impl != ImplXsessiond {
		t.Fatalf("quick rows %+v", rows)
	}
	for i, r := range rows[:3] {
		if kind := []Kind{KindGenOnly, KindReceive, KindReceive}[i]; r.Kind != kind || r.Payload != 64 || r.Group != rows[0].Group || r.Gen != genXDP {
			t.Errorf("quick row %+v", r)
		}
	}
	if tcp := rows[3:]; !slices.Equal(tcp, tcpScenarios()) {
		t.Errorf("quick TCP rows %+v", tcp)
	}
}

// TestScenariosGen checks which generator each UDP receive row gets: with
// auto, XDP frames on one queue and the packet socket on more or when the
// rows are placed; a chosen one everywhere; none for the other kinds.
func TestScenariosGen(t *testing.T) {
	for _, placed := range []bool{false, true} {
		for _, gen := range []string{"", genAuto, genXDP, genPacket} {
			for _, r := range Scenarios(Plan{Payloads: DefaultPayloads, Queues: 4, Flows: 16, Gen: gen, PlaceUDP: placed}) {
				want := ""
				switch {
				case r.Kind != KindReceive && r.Kind != KindGenOnly:
				case gen == genXDP || gen == genPacket:
					want = gen
				case r.Queues == 1 && !placed:
					want = genXDP
				default:
					want = genPacket
				}
				if r.Gen != want {
					t.Errorf("--gen %q, placed %v: row %s has generator %q, want %q", gen, placed, r.Name, r.Gen, want)
				}
			}
		}
	}
}

// TestScenariosTCP checks --tcp's rows: every TCP kind, the kernel row
// before xsessiond's in each group, one queue.
func TestScenariosTCP(t *testing.T) {
	rows := Scenarios(Plan{Payloads: DefaultPayloads, Queues: 4, Flows: 16, TCPOnly: true})
	kinds := map[Kind]int{}
	for i, r := range rows {
		kinds[r.Kind]++
		want := ImplKernel
		if i%2 == 1 {
			want = ImplXsessiond
			if rows[i-1].Group != r.Group {
				t.Errorf("row %s not beside its baseline", r.Name)
			}
		}
		if !isTCP(r.Kind) || r.Impl != want || r.Queues != 1 || r.Flows < 1 {
			t.Errorf("TCP row %+v", r)
		}
	}
	if len(rows) != 10 || kinds[KindTCPRR] != 4 || kinds[KindTCPCRR] != 2 || kinds[KindTCPRecv] != 2 || kinds[KindTCPSend] != 2 {
		t.Errorf("TCP rows %+v", rows)
	}
	if o, err := parseRigFlags([]string{"--tcp"}, io.Discard); err != nil || !o.tcp {
		t.Errorf("--tcp: %+v %v", o, err)
	}
}

func TestParseRigFlags(t *testing.T) {
	o, err := parseRigFlags([]string{"--quick", "--reps", "5", "--duration", "1s", "--queues", "4", "--payloads", "64,1472", "--out", "x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.quick || o.reps != 1 || o.timing.Window != time.Second || o.queues != 4 || !slices.Equal(o.payloads, []int{64, 1472}) || o.out != "x" {
		t.Errorf("options %+v", o)
	}
	for _, bad := range [][]string{{"--reps", "0"}, {"--queues", "0"}, {"--payloads", "8"}, {"--payloads", "64,x"}, {"--duration", "1ms"}, {"extra"}} {
		if _, err := parseRigFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
