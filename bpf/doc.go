//go:build ignore

// This file only documents the folder: the C sources beside it would
// otherwise make the go tool treat bpf/ as a cgo package.

// Package bpf holds the C source of xsessiond's XDP program and its headers,
// and nothing else. The program is compiled by bpf2go from package loader
// (go generate ./loader); the generated object and bindings live in loader/.
//
// The program steers packets that belong to bound sessions (an established
// 5-tuple hit, then a listener hit on the exact address, then on the zero
// address) to the AF_XDP socket of the receiving queue, and passes every
// other packet to the kernel untouched. The fragments of a UDP datagram go
// together: the first fragment's UDP header decides, and an LRU map (the
// fragments map) makes the later ones follow it for the daemon's
// reassembly timeout (30 s by default), or 100 ms after the datagram's
// last fragment when it went to the socket; a datagram whose later
// fragment arrives before the first is the kernel's. Fragments of other
// protocols go to the kernel.
package bpf
