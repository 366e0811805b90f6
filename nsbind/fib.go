package nsbind

import "github.com/xsessiond/xsessiond/flow"

// FIBID is the session layer's FIB id; nsbind derives one per network
// namespace (see fibOfFD). It is an alias so that View satisfies the
// session layer's interfaces without conversion.
type FIBID = flow.FIBID
