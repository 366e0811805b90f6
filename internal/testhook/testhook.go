// Package testhook holds settings that tests of other packages change to
// keep a loaded test machine out of what they check, or to widen a window
// a race needs. Every one is zero, and changes nothing, outside those
// tests.
package testhook

import "sync/atomic"

// SpinStolenAt, when not zero, is the yield in nanoseconds that an App
// attached from then on takes as stolen by a busy thread (package app,
// spinStolen): a test of the read spin's effect on one CPU sets it out of
// reach, as the other packages' tests running at the same time would
// otherwise end its spins by design.
var SpinStolenAt atomic.Int64

// CloseMarkPause and DialRegisterPause, when not zero, are how long in
// nanoseconds a Conn's Close (package app) waits between storing its close
// mark and unregistering the connection, and a Dial between the daemon's
// connect event and registering its connection: a test of the daemon
// giving a closed connection's handle at once to the next widens those
// windows, which preempted goroutines open now and then.
var CloseMarkPause, DialRegisterPause atomic.Int64

// ListenRegisterPause, when not zero, is how long in nanoseconds a Listen
// or ListenPacket (package app) waits between the daemon's bind reply and
// registering its listener: a test of sessions the daemon hands over as
// soon as the listener is bound widens that window.
var ListenRegisterPause atomic.Int64

// UserNSByUIDMap, when set, has the daemon (package daemon, sameUserNS)
// tell a peer's user namespace from its uid map alone, as it does where it
// may not look at the namespace of another user's process (without
// CAP_SYS_PTRACE, as the systemd unit runs it).
var UserNSByUIDMap atomic.Bool

// NamespaceAddPause, when not zero, is how long in nanoseconds the daemon's
// namespace add (package daemon, addNamespace) waits between the session
// layer's add and its note of the netns reference the namespace holds: a
// test of a delete at the same time widens that window.
var NamespaceAddPause atomic.Int64

// ResolverVerdictPause, when not zero, is how long in nanoseconds the
// datapath's next-hop resolver (package datapath) waits between asking the
// kernel to resolve a next hop and storing its verdict that no slot was
// free to wait for the answer: a test of the kernel's answer coming in
// between widens that window, which a loaded machine opens now and then.
var ResolverVerdictPause atomic.Int64

// MirrorApplyPause, when not zero, is how long in nanoseconds the
// datapath's mirror (package datapath) waits before it applies each change
// of the session layer to the XDP program's maps: a test of what a slow
// mirror lets through (a port handed back while still steered) widens
// that window, which a loaded machine opens now and then.
var MirrorApplyPause atomic.Int64
