// Package flow holds the value types every layer of xsessiond shares: the
// 5-tuple, endpoint, transport, scope, FIB id and session handle, the change
// records of the global tables, the session URI parser, and the error
// sentinels with their wire codes. It sits at the bottom of the package
// graph: no logic beyond parsing and formatting, no syscalls, no imports
// from this module. Everything in it is a value and safe to copy; ParseURI
// is safe for concurrent use.
package flow
