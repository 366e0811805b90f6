package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gonum.org/v1/plot"
)

// fixtureResults is a small run: a generator-alone row, a kernel row, an
// xsessiond row that was not available, an echo row and a cut-through row.
func fixtureResults() []Result {
	mk := func(s Scenario, status string, reps ...Rep) Result {
		r := Result{Scenario: s, Status: status, Reps: reps}
		if status == StatusNotAvailable {
			r.Note = "not available on this machine"
		}
		computeFigures(&r)
		return r
	}
	sec := int64(time.Second)
	grp := "udp64-q1-f1"
	lat := func(base time.Duration) []time.Duration {
		s := make([]time.Duration, 1000)
		for i := range s {
			s[i] = base + time.Duration(i)*time.Microsecond
		}
		return s
	}
	return []Result{
		mk(Scenario{Name: grp + "/gen-only", Group: grp, Kind: KindGenOnly, Impl: ImplGenOnly, Payload: 64, Queues: 1, Flows: 1, Gen: genPacket},
			StatusOK,
			Rep{WindowNs: sec, Sent: 1000, Delivered: 1000, TotalSent: 1200, TotalDelivered: 1200, BusyNs: 100_000, Util: 0.5},
			Rep{WindowNs: sec, Sent: 1000, Delivered: 1000, TotalSent: 1200, TotalDelivered: 1200, BusyNs: 300_000, Util: 0.5},
			Rep{WindowNs: sec, Sent: 1000, Delivered: 1000, TotalSent: 1200, TotalDelivered: 1200, BusyNs: 200_000, Util: 0.5}),
		mk(Scenario{Name: grp + "/kernel", Group: grp, Kind: KindReceive, Impl: ImplKernel, Payload: 64, Queues: 1, Flows: 1, Gen: genPacket},
			StatusOK,
			Rep{WindowNs: sec, Sent: 1000, Delivered: 800, TotalSent: 1000, TotalDelivered: 800, BusyNs: 800_000, ProcNs: 400_000, Util: 1},
			Rep{WindowNs: 2 * sec, Sent: 2000, Delivered: 2000, TotalSent: 2000, TotalDelivered: 2000, BusyNs: 1_000_000, Util: 1}),
		mk(Scenario{Name: grp + "/xsessiond", Group: grp, Kind: KindReceive, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 1, Gen: genPacket},
			StatusNotAvailable),
		mk(Scenario{Name: "echo64-q1-f1/kernel", Group: "echo64-q1-f1", Kind: KindEcho, Impl: ImplKernel, Payload: 64, Queues: 1, Flows: 1, Rate: 1000},
			StatusOK,
			Rep{WindowNs: sec, Sent: 1000, Delivered: 1000, TotalSent: 1000, TotalDelivered: 1000, BusyNs: 1000, Samples: lat(10 * time.Microsecond)},
			Rep{WindowNs: sec, Sent: 1000, Delivered: 1000, TotalSent: 1000, TotalDelivered: 1000, BusyNs: 1000, Samples: lat(20 * time.Microsecond)}),
		mk(Scenario{Name: "echo64-q1-f1/xsessiond", Group: "echo64-q1-f1", Kind: KindEcho, Impl: ImplXsessiond, Payload: 64, Queues: 1, Flows: 1},
			StatusNotAvailable),
		mk(Scenario{Name: "ct64-q1-f1/socketpair", Group: "ct64-q1-f1", Kind: KindCutThrough, Impl: ImplSocketpair, Payload: 64, Queues: 1, Flows: 1},
			StatusOK, Rep{WindowNs: sec, Sent: 5000, Delivered: 5000, TotalSent: 6000, TotalDelivered: 6000, BusyNs: 5_000_000}),
	}
}

func TestComputeFiguresAndGenCost(t *testing.T) {
	res := fixtureResults()
	applyGenCost(res)
	gen, k := res[0], res[1]
	if gen.CPUNs != (Summary{Median: 200, Min: 100, Max: 300, N: 3}) {
		t.Errorf("gen-only cpu %+v", gen.CPUNs)
	}
	// kernel: 800 pps and 1000 pps; cpu 1000 and 500 ns/pkt; loss 200
	// (20%) and 0.
	if k.PPS != (Summary{Median: 900, Min: 800, Max: 1000, N: 2}) {
		t.Errorf("kernel pps %+v", k.PPS)
	}
	if want := 900 * 64 * 8 / 1e9; math.Abs(k.Gbps.Median-want) > 1e-12 {
		t.Errorf("kernel gbps %v, want %v", k.Gbps.Median, want)
	}
	if k.Loss != (Summary{Median: 100, Min: 0, Max: 200, N: 2}) || k.LossPct != (Summary{Median: 10, Min: 0, Max: 20, N: 2}) {
		t.Errorf("kernel loss %+v %+v", k.Loss, k.LossPct)
	}
	if k.CPUNs != (Summary{Median: 750, Min: 500, Max: 1000, N: 2}) {
		t.Errorf("kernel cpu %+v", k.CPUNs)
	}
	// ProcNs: the second repetition has 0 ns over 2000 packets.
	if k.ProcNs != (Summary{Median: 250, Min: 0, Max: 500, N: 2}) {
		t.Errorf("kernel proc %+v", k.ProcNs)
	}
	// rx cost with the gen-only median (200 ns/pkt): (800000 − 200×1000)/800
	// = 750 and (1000000 − 200×2000)/2000 = 300.
	if k.RxCPUNs != (Summary{Median: 525, Min: 300, Max: 750, N: 2}) {
		t.Errorf("kernel rx cost %+v", k.RxCPUNs)
	}
	if res[2].PPS.N != 0 || res[2].RxCPUNs.N != 0 {
		t.Errorf("unavailable row has figures: %+v", res[2])
	}
	e := res[3]
	if e.P50us != (Summary{Median: 514, Min: 509, Max: 519, N: 2}) {
		t.Errorf("echo p50 %+v", e.P50us)
	}
	if e.P999us.Max != 1018 || len(e.CDF) == 0 || e.CDF[len(e.CDF)-1].Fraction != 1 {
		t.Errorf("echo p99.9 %+v, cdf of %d points", e.P999us, len(e.CDF))
	}
}

func TestRatiosAndQuickLine(t *testing.T) {
	res := fixtureResults()
	rows := Ratios(res)
	if len(rows) != 2 {
		t.Fatalf("%d ratio rows, want 2 (one per xsessiond row)", len(rows))
	}
	for _, r := range rows {
		if r.Available || !strings.Contains(r.Note, "not available") {
			t.Errorf("%s: available %v note %q", r.Group, r.Available, r.Note)
		}
		for f, v := range r.Ratios {
			if v != nil {
				t.Errorf("%s: ratio %s = %v for a row that was not available", r.Group, f, *v)
			}
		}
	}
	want := "udp64 cost ratio kernel/xsessiond = n/a, rate ratio xsessiond/kernel = n/a, receive cost ratio (generator's cost taken out) = n/a, host B CPU ratio kernel/xsessiond = n/a, unexplained loss kernel/xsessiond = n/a"
	if got := quickLine(res); got != want {
		t.Errorf("quick line %q, want %q", got, want)
	}

	// Make xsessiond available: twice the kernel's rate at half its cost.
	res[2].Status, res[2].Note = StatusOK, ""
	res[2].Reps = []Rep{{WindowNs: int64(time.Second), Sent: 1800, Delivered: 1800, TotalSent: 1800, TotalDelivered: 1800, BusyNs: 675_000}}
	computeFigures(&res[2])
	applyGenCost(res)
	rows = Ratios(res)
	if !rows[0].Available || rows[0].Baseline != ImplKernel {
		t.Fatalf("row %+v", rows[0])
	}
	if v := rows[0].Ratios["pps"]; v == nil || *v != 2 {
		t.Errorf("pps ratio %v, want 2", v)
	}
	if v := rows[0].Ratios["cpu_ns_per_pkt"]; v == nil || math.Abs(*v-0.5) > 1e-12 {
		t.Errorf("cpu ratio %v, want 0.5", v)
	}
	if v := rows[0].Ratios["p50_us"]; v != nil {
		t.Errorf("p50 ratio of receive rows %v, want null", *v)
	}
	// Receivers alone, less the generator's 200 ns per sent packet:
	// kernel 750 and 300 (median 525), xsessiond 175.
	want = "udp64 cost ratio kernel/xsessiond = 2.00, rate ratio xsessiond/kernel = 2.00, receive cost ratio (generator's cost taken out) = 3.00, host B CPU ratio kernel/xsessiond = n/a, unexplained loss kernel/xsessiond = 0/0"
	if got := quickLine(res); got != want {
		t.Errorf("quick line %q, want %q", got, want)
	}
	// Placed rows: host B's CPU per packet, kernel 500 (400,000 ns for
	// 800, 1,000,000 for 2,000), xsessiond 100.
	res[1].Reps[0].SrvNs, res[1].Reps[1].SrvNs, res[2].Reps[0].SrvNs = 400_000, 1_000_000, 180_000
	computeFigures(&res[1])
	computeFigures(&res[2])
	applyGenCost(res)
	if res[1].SrvCPUNs != (Summary{Median: 500, Min: 500, Max: 500, N: 2}) {
		t.Errorf("kernel B CPU %+v", res[1].SrvCPUNs)
	}
	want = "udp64 cost ratio kernel/xsessiond = 2.00, rate ratio xsessiond/kernel = 2.00, receive cost ratio (generator's cost taken out) = 3.00, host B CPU ratio kernel/xsessiond = 5.00, unexplained loss kernel/xsessiond = 0/0"
	if got := quickLine(res); got != want {
		t.Errorf("quick line of placed rows %q, want %q", got, want)
	}
	// Rows of the XDP generator: its gen-only row is not taken out.
	xdpRes := slices.Clone(res)
	for i := range xdpRes {
		xdpRes[i].Gen = genXDP
		xdpRes[i].RxCPUNs = Summary{}
	}
	applyGenCost(xdpRes)
	want = "udp64 cost ratio kernel/xsessiond = 2.00, rate ratio xsessiond/kernel = 2.00, receive cost ratio (generator's cost taken out) = n/a, host B CPU ratio kernel/xsessiond = 5.00, unexplained loss kernel/xsessiond = 0/0"
	if got := quickLine(xdpRes); got != want {
		t.Errorf("quick line of XDP generator rows %q, want %q", got, want)
	}
	// Without a gen-only row, the receivers' ratio is not known.
	res[0].Status = StatusNotAvailable
	for i := range res {
		res[i].RxCPUNs = Summary{}
	}
	applyGenCost(res)
	want = "udp64 cost ratio kernel/xsessiond = 2.00, rate ratio xsessiond/kernel = 2.00, receive cost ratio (generator's cost taken out) = n/a, host B CPU ratio kernel/xsessiond = 5.00, unexplained loss kernel/xsessiond = 0/0"
	if got := quickLine(res); got != want {
		t.Errorf("quick line without gen-only %q, want %q", got, want)
	}
}

func fixtureReport() *Report {
	res := fixtureResults()
	applyGenCost(res)
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: "1m0s",
		Host:   HostInfo{Kernel: "Linux 6.18", CPUs: 2, CPUModel: "test"},
		Config: RunConfig{Reps: 3, Window: "2s", Warmup: "300ms", Queues: 1, Flows: 1},
		Method: methodNotes, Results: res, Ratios: Ratios(res),
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, fixtureReport()); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("results.json does not parse: %v", err)
	}
	if len(back.Results) != 6 || back.Results[1].PPS.Median != 900 || back.Results[1].Reps[0].Delivered != 800 {
		t.Errorf("round trip lost data: %+v", back.Results[1])
	}
	if back.Results[2].Status != StatusNotAvailable || back.Results[2].Note == "" {
		t.Errorf("unavailable row lost its note: %+v", back.Results[2])
	}
	if !strings.Contains(b.String(), `"pps": null`) {
		t.Error("ratios of an unavailable row should be null")
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, fixtureReport()); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## UDP receive", "## UDP echo latency", "## Cut-through", "## xsessiond / baseline",
		"| udp64-q1-f1 | kernel | packet | 0.001 [0.001–0.001] |",
		"| 750 [500–1000] | 525 [300–750] |",
		"**not available**: not available on this machine",
		"| 514.0 [509.0–519.0] |",
		"| udp64-q1-f1 | kernel | n/a | n/a |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	// Every table row has as many cells as its header.
	var cols int
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "|") {
			cols = 0
			continue
		}
		n := strings.Count(l, "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row with %d separators under a header of %d: %s", n, cols, l)
		}
	}
}

func TestPlotsArePNG(t *testing.T) {
	rep := fixtureReport()
	for _, tc := range []struct {
		name string
		draw func() ([]byte, error)
	}{
		{"rate", func() ([]byte, error) { return render(RateByPayloadPlot(rep.Results, 1, 1)) }},
		{"scaling", func() ([]byte, error) { return render(ScalingPlot(rep.Results, 64, 1)) }},
		{"latency", func() ([]byte, error) { return render(LatencyCDFPlot(rep.Results)) }},
		{"empty", func() ([]byte, error) { return render(LatencyCDFPlot(nil)) }},
	} {
		b, err := tc.draw()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", tc.name, err)
		}
		if cfg.Width < 100 || cfg.Height < 100 {
			t.Errorf("%s: %dx%d image", tc.name, cfg.Width, cfg.Height)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: PNG does not decode: %v", tc.name, err)
		}
	}
}

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	if err := writeOutputs(dir, fixtureReport()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "results.md", "rate_by_payload.png", "latency_cdf.png", "scaling_queues.png"} {
		if err := checkNonEmpty(dir + "/" + f); err != nil {
			t.Error(err)
		}
	}
}

// countingPair is a LocalPair whose counts go up at every look; Start
// notes its name in order.
type countingPair struct {
	name  string
	order *[]string
	n     atomic.Uint64
}

func (c *countingPair) Name() string      { return c.name }
func (c *countingPair) Start(int) error   { *c.order = append(*c.order, c.name); return nil }
func (c *countingPair) Sent() uint64      { return c.n.Add(1) }
func (c *countingPair) Delivered() uint64 { return c.n.Load() }
func (c *countingPair) Stop() error       { return nil }

func TestRunGroupTakesTurns(t *testing.T) {
	var log bytes.Buffer
	r := &runner{rigs: &rigs{}, prog: newProgress(&log), timing: Timing{Window: 10 * time.Millisecond}}
	const na, first, second = "unavailable-for-test", "first-for-test", "second-for-test"
	naErr := wrapNA("not on this machine")
	var order []string
	localPairs[na] = func() (LocalPair, error) { return nil, naErr }
	for _, impl := range []string{first, second} {
		localPairs[impl] = func() (LocalPair, error) { return &countingPair{name: impl, order: &order}, nil }
	}
	defer func() {
		for _, impl := range []string{na, first, second} {
			delete(localPairs, impl)
		}
	}()
	var rows []Scenario
	for _, impl := range []string{na, first, second} {
		rows = append(rows, Scenario{Name: "ct64-q1-f1/" + impl, Group: "ct64-q1-f1", Kind: KindCutThrough, Impl: impl, Payload: 64})
	}
	groups := groupRows(append(rows, Scenario{Name: "ct512-q1-f1/" + first, Group: "ct512-q1-f1"}), regexp.MustCompile("-for-test$"))
	if len(groups) != 2 || len(groups[0]) != 3 || len(groups[1]) != 1 {
		t.Fatalf("groups %v", groups)
	}
	res := r.runGroup(t.Context(), groups[0], 3)
	if want := []string{first, second, first, second, first, second}; !slices.Equal(order, want) {
		t.Errorf("repetitions ran in the order %v, want %v", order, want)
	}
	if res[0].Status != StatusNotAvailable || len(res[0].Reps) != 0 || res[0].PPS.N != 0 || res[0].Note != naErr.Error() {
		t.Errorf("unavailable row: %+v", res[0])
	}
	for _, rr := range res[1:] {
		if rr.Status != StatusOK || len(rr.Reps) != 3 || rr.PPS.N != 3 {
			t.Errorf("row %s: status %s, %d repetitions, %d figures", rr.Name, rr.Status, len(rr.Reps), rr.PPS.N)
		}
	}
	if !errors.Is(naErr, ErrNotAvailable) {
		t.Error("wrapNA's error must match ErrNotAvailable")
	}
	if !strings.Contains(log.String(), "NOT AVAILABLE") {
		t.Errorf("progress output lacks the note: %q", log.String())
	}
}

func render(p *plot.Plot, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = WritePNG(&b, p)
	return b.Bytes(), err
}

func checkNonEmpty(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}

func TestTurns(t *testing.T) {
	res := fixtureResults()
	lat := func(base time.Duration) []time.Duration {
		s := make([]time.Duration, 1000)
		for i := range s {
			s[i] = base + time.Duration(i)*time.Microsecond
		}
		return s
	}
	x := &res[4]
	if x.Group != "echo64-q1-f1" || x.Impl != ImplXsessiond {
		t.Fatalf("fixture row 4 is %s", x.Name)
	}
	if rows := Ratios(res); rows[1].Turns != nil {
		t.Errorf("turns %+v for a row that was not available", rows[1].Turns)
	}
	// The kernel's turns start at 10 and 20 µs; xsessiond's first is
	// faster, its second slower, and its third has no kernel turn.
	x.Status, x.Note = StatusOK, ""
	x.Reps = []Rep{
		{WindowNs: int64(time.Second), Sent: 1000, Delivered: 1000, TotalSent: 1000, TotalDelivered: 1000, Samples: lat(5 * time.Microsecond)},
		{WindowNs: int64(time.Second), Sent: 1000, Delivered: 1000, TotalSent: 1000, TotalDelivered: 1000, Samples: lat(30 * time.Microsecond)},
		{WindowNs: int64(time.Second), Sent: 1000, Delivered: 1000, TotalSent: 1000, TotalDelivered: 1000, Samples: lat(0)},
	}
	computeFigures(x)
	row := Ratios(res)[1]
	if want := (Turns{N: 2, P50AtOr: 1, P99AtOr: 1}); row.Turns == nil || *row.Turns != want {
		t.Fatalf("turns %+v, want %+v", row.Turns, want)
	}
	if got, want := row.Turns.String(), "turn by turn, p50 at or below in 1 of 2, p99 in 1"; got != want {
		t.Errorf("turns say %q, want %q", got, want)
	}
	// The same latency in a turn counts as at or below.
	x.Reps[1].Samples = lat(20 * time.Microsecond)
	if got := Ratios(res)[1].Turns; got.P50AtOr != 2 || got.P99AtOr != 2 {
		t.Errorf("equal turns: %+v", got)
	}
	// Round trips to the client's socket are counted apart, in the turns
	// where both rows have them.
	x.Reps[0].SocketSamples = lat(1 * time.Microsecond)
	x.Reps[1].SocketSamples = lat(25 * time.Microsecond)
	for i := range res {
		if res[i].Group == x.Group && res[i].Impl == ImplKernel {
			res[i].Reps[0].SocketSamples = lat(2 * time.Microsecond)
			res[i].Reps[1].SocketSamples = lat(10 * time.Microsecond)
			computeFigures(&res[i])
		}
	}
	computeFigures(x)
	if want := (Turns{N: 2, P50AtOr: 2, P99AtOr: 2, SocketN: 2, SocketP50AtOr: 1, SocketP99AtOr: 1}); *Ratios(res)[1].Turns != want {
		t.Errorf("turns %+v, want %+v", *Ratios(res)[1].Turns, want)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, &Report{Results: res, Ratios: Ratios(res)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "turn by turn, p50 at or below in 2 of 2, p99 in 2; at A's socket p50 in 1 of 2, p99 in 1 |") {
		t.Errorf("results.md has no turns for the echo row:\n%s", b.String())
	}
}

// TestUnexplainedText: the quick line gives the repetitions' unexplained
// loss furthest from 0, and marks one below 0 (counters that counted more
// than was lost would hide a loss no counter explains).
func TestUnexplainedText(t *testing.T) {
	for _, c := range []struct {
		u    Summary
		want string
	}{
		{Summary{Median: 0, Min: 0, Max: 0, N: 5}, "0"},
		{Summary{Median: 0, Min: 0, Max: 12, N: 5}, "12"},
		{Summary{Median: 0, Min: -3, Max: 2, N: 5}, "-3 (over-counted)"},
	} {
		if got := unexplainedText(c.u); got != c.want {
			t.Errorf("%+v: %q, want %q", c.u, got, c.want)
		}
	}
}
