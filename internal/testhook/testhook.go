// Package testhook holds settings that tests of other packages change to
// keep a loaded test machine out of what they check. Every one is zero,
// and changes nothing, outside those tests.
package testhook

import "sync/atomic"

// SpinStolenAt, when not zero, is the yield in nanoseconds that an App
// attached from then on takes as stolen by a busy thread (package app,
// spinStolen): a test of the read spin's effect on one CPU sets it out of
// reach, as the other packages' tests running at the same time would
// otherwise end its spins by design.
var SpinStolenAt atomic.Int64
