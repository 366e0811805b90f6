package datapath

import (
	"reflect"
	"testing"
)

// TestCountsAllUint64 checks what Counts.array relies on: every field of
// Counts is a uint64, so the array covers exactly the fields, in order.
func TestCountsAllUint64(t *testing.T) {
	rt := reflect.TypeFor[Counts]()
	if rt.NumField() != int(numCounts) {
		t.Fatalf("Counts has %d fields, the array %d", rt.NumField(), numCounts)
	}
	var c Counts
	v := reflect.ValueOf(&c).Elem()
	for i := range rt.NumField() {
		if f := rt.Field(i); f.Type.Kind() != reflect.Uint64 {
			t.Fatalf("Counts.%s is %v, not uint64", f.Name, f.Type)
		}
		v.Field(i).SetUint(uint64(i + 1))
	}
	for i, x := range c.array() {
		if x != uint64(i+1) {
			t.Fatalf("array()[%d] = %d, want field %d's value", i, x, i)
		}
	}
	var tot QueueStats
	tot.add(&QueueStats{Counts: c})
	tot.add(&QueueStats{Counts: c})
	if tot.Naps != 2*c.Naps || tot.Rx != 2*c.Rx {
		t.Fatalf("totals %+v of twice %+v", tot.Counts, c)
	}
}
