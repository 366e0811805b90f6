package datapath

import "unsafe"

// numCounts is the number of fields of Counts.
const numCounts = unsafe.Sizeof(Counts{}) / unsafe.Sizeof(uint64(0))

// array returns c's fields as an array, in field order. Counts holds
// uint64 fields only (TestCountsAllUint64 checks).
func (c *Counts) array() *[numCounts]uint64 { return (*[numCounts]uint64)(unsafe.Pointer(c)) }
