package app

import "github.com/xsessiond/xsessiond/flow"

// What apps use of the shared types, so that an app needs only this package:
// the scope of Options and the errors that errors.Is matches across the
// control socket (the same values as package flow's and package sessions').

// Scope says where an app's listeners are visible and which tables its
// connects use.
type Scope = flow.Scope

// Scope flags.
const (
	ScopeGlobal = flow.ScopeGlobal
	ScopeLocal  = flow.ScopeLocal
)

// Errors the daemon answers with.
var (
	ErrNotAttached      = flow.ErrNotAttached
	ErrAlreadyAttached  = flow.ErrAlreadyAttached
	ErrInvalidNamespace = flow.ErrInvalidNamespace
	ErrWrongSecret      = flow.ErrWrongSecret
	ErrAddressInUse     = flow.ErrAddressInUse
	ErrNotInNamespace   = flow.ErrNotInNamespace
	ErrFiltered         = flow.ErrFiltered
	ErrScope            = flow.ErrScope
	ErrLocalConnect     = flow.ErrLocalConnect
	ErrHostSocket       = flow.ErrHostSocket
	ErrNoSession        = flow.ErrNoSession
	ErrNotOwner         = flow.ErrNotOwner
	ErrNotSupported     = flow.ErrNotSupported
	ErrInvalidURI       = flow.ErrInvalidURI
	ErrInvalidValue     = flow.ErrInvalidValue
	ErrNoMemory         = flow.ErrNoMemory
	ErrConnect          = flow.ErrConnect
	ErrPermission       = flow.ErrPermission
	ErrLimit            = flow.ErrLimit
)
