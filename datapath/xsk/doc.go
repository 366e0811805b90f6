// Package xsk implements AF_XDP sockets on golang.org/x/sys/unix: UMEM
// registration, the fill, completion, rx and tx rings, and batch
// producer/consumer operations on them.
package xsk
