// Package xsessiond is the root of the xsessiond module: a session layer for
// Linux hosts in which XDP steers the packets of bound sessions to AF_XDP
// sockets, per-queue Go workers deliver their payloads into shared-memory
// fifos, and everything else stays with the kernel.
//
// The root package holds no code; it carries the layout test that keeps every
// package documented. See README.md and the package docs below it.
package xsessiond
