package loader

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestCounterNamesBTF checks that the counter map's value is a struct
// whose fields are the counters, named as Each names them, one u64 each
// in enum xs_counter order: what bpftool map dump shows.
func TestCounterNamesBTF(t *testing.T) {
	spec, err := loadXsession()
	if err != nil {
		t.Fatal(err)
	}
	st, ok := spec.Maps["counters"].Value.(*btf.Struct)
	if !ok {
		t.Fatalf("counter map value is %v, want a struct", spec.Maps["counters"].Value)
	}
	if len(st.Members) != len(counterNames) {
		t.Fatalf("struct %s has %d fields, loader names %d counters", st.Name, len(st.Members), len(counterNames))
	}
	for i, m := range st.Members {
		if m.Name != counterNames[i] || m.Offset != btf.Bits(64*i) {
			t.Errorf("field %d: %s at bit %d, want %s at bit %d", i, m.Name, m.Offset, counterNames[i], 64*i)
		}
	}
}

// TestPortIndexByteOrder checks that the port index takes the port in
// network byte order, as the listener and established keys do.
func TestPortIndexByteOrder(t *testing.T) {
	if got := makePortSlot(flow.TransportUDP, 9000, portEst, flow.Family4).index; got != 0x2823 {
		t.Errorf("udp/9000 at index %#x, want 0x2823 (9000 = 0x2328 in network order)", got)
	}
	if got := makePortSlot(flow.TransportTCP, 1, portEst, flow.Family4).index; got != 1<<16|0x0100 {
		t.Errorf("tcp/1 at index %#x, want %#x", got, 1<<16|0x0100)
	}
}

// TestBpftoolCounterNames loads the program and checks that bpftool map
// dump names every counter.
func TestBpftoolCounterNames(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{})
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		nstest.RequirePrivileged(t) // fails under XSESSIOND_PRIVILEGED=require
		t.Skip("bpftool not installed")
	}
	info, err := o.objs.Counters.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no map id")
	}
	out, err := exec.Command(bpftool, "-j", "map", "dump", "id", fmt.Sprint(id)).Output()
	if err != nil {
		t.Fatalf("bpftool: %v\n%s", err, out)
	}
	var dump []struct {
		Formatted struct {
			Values []struct {
				Value map[string]uint64 `json:"value"`
			} `json:"values"`
		} `json:"formatted"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatalf("bpftool output: %v\n%s", err, out)
	}
	if len(dump) != 1 || len(dump[0].Formatted.Values) == 0 {
		t.Fatalf("bpftool output:\n%s", out)
	}
	v := dump[0].Formatted.Values[0].Value
	for _, n := range counterNames {
		if _, ok := v[n]; !ok {
			t.Errorf("bpftool shows no %s:\n%s", n, out)
		}
	}
}
