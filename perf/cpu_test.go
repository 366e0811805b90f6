package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func readFixture(t *testing.T, name string) CPUTimes {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ParseProcStat(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func TestParseProcStat(t *testing.T) {
	a := readFixture(t, "proc_stat_a")
	want := CPUTimes{User: 1000, Nice: 50, System: 400, Idle: 8000, IOWait: 30, IRQ: 20, SoftIRQ: 80, Steal: 10}
	if a != want {
		t.Fatalf("got %+v, want %+v", a, want)
	}
	if a.Busy() != 1000+50+400+20+80+10 {
		t.Errorf("busy %d", a.Busy())
	}
	if a.Total() != a.Busy()+8000+30 {
		t.Errorf("total %d", a.Total())
	}
}

func TestBusyBetweenAndPerPacket(t *testing.T) {
	a, b := readFixture(t, "proc_stat_a"), readFixture(t, "proc_stat_b")
	busy, err := BusyBetween(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// user +150, nice 0, system +60, irq +5, softirq +20, steal +4 = 239
	// ticks of 10 ms; idle (+100) and iowait (+1) are not busy.
	if want := 239 * 10 * time.Millisecond; busy != want {
		t.Fatalf("busy %v, want %v", busy, want)
	}
	if u := Utilisation(a, b); u < 239.0/340-1e-9 || u > 239.0/340+1e-9 {
		t.Errorf("utilisation %v, want %v", u, 239.0/340)
	}
	ns, ok := PerPacket(busy, 1_000_000)
	if !ok || ns != 2390 {
		t.Errorf("per packet %v %v, want 2390 ns", ns, ok)
	}
	if _, ok := PerPacket(busy, 0); ok {
		t.Error("per packet of 0 packets should report no value")
	}
	// Receiver cost: 2.39 s busy, generator 1000 ns × 1.2M sent = 1.2 s,
	// leaving 1.19 s over 1M delivered = 1190 ns.
	rc, ok := ReceiverCost(busy, 1_200_000, 1_000_000, 1000)
	if !ok || rc < 1190-1e-6 || rc > 1190+1e-6 {
		t.Errorf("receiver cost %v %v, want 1190", rc, ok)
	}
	if _, err := BusyBetween(b, a); !errors.Is(err, errProcStat) {
		t.Errorf("backwards counters: err %v, want errProcStat", err)
	}
}

func TestParseProcStatOneCPU(t *testing.T) {
	f, err := os.Open("testdata/proc_stat_a")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := parseProcStatLine(f, "cpu1")
	if err != nil {
		t.Fatal(err)
	}
	want := CPUTimes{User: 500, Nice: 25, System: 200, Idle: 4000, IOWait: 15, IRQ: 10, SoftIRQ: 40, Steal: 5}
	if c != want {
		t.Fatalf("cpu1: got %+v, want %+v", c, want)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := parseProcStatLine(f, "cpu7"); !errors.Is(err, errProcStat) {
		t.Fatalf("cpu7 (absent): err %v, want errProcStat", err)
	}
	if c, err := ReadCPUTime(0); err != nil || c.Total() == 0 {
		t.Fatalf("this machine's cpu0: %+v, %v", c, err)
	}
}

func TestParseProcStatRejectsBadInput(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"no cpu":     "intr 1 2 3\nctxt 4\n",
		"short":      "cpu  1 2 3 4\n",
		"not number": "cpu  1 2 x 4 5 6 7 8 0 0\n",
		"negative":   "cpu  1 2 -3 4 5 6 7 8 0 0\n",
	} {
		if _, err := ParseProcStat(strings.NewReader(in)); !errors.Is(err, errProcStat) {
			t.Errorf("%s: err %v, want errProcStat", name, err)
		}
	}
}

func TestReadCPUTimesOnThisMachine(t *testing.T) {
	c, err := ReadCPUTimes()
	if err != nil {
		t.Fatal(err)
	}
	if c.Total() == 0 {
		t.Fatal("all /proc/stat counters are zero")
	}
}
