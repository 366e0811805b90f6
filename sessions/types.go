package sessions

import "github.com/xsessiond/xsessiond/flow"

// The value types, sentinels and wire codes of the session layer live in
// package flow, at the bottom of the package graph, so that packages that
// only carry sessions (the frame codec, the loader, the control protocol,
// the app library) need not import the session layer. The names below keep
// the session layer's own code and its callers reading as before.

// Value types shared with the rest of the tree.
type (
	Transport  = flow.Transport
	Scope      = flow.Scope
	FIBID      = flow.FIBID
	Handle     = flow.Handle
	Endpoint   = flow.Endpoint
	FiveTuple  = flow.FiveTuple
	ChangeOp   = flow.ChangeOp
	ChangeKind = flow.ChangeKind
	Change     = flow.Change
	Code       = flow.Code
)

// Constants of the shared types.
const (
	TransportTCP    = flow.TransportTCP
	TransportUDP    = flow.TransportUDP
	TransportSCTP   = flow.TransportSCTP
	ScopeGlobal     = flow.ScopeGlobal
	ScopeLocal      = flow.ScopeLocal
	LocalHandleBit  = flow.LocalHandleBit
	InvalidHandle   = flow.InvalidHandle
	Family4         = flow.Family4
	Family6         = flow.Family6
	OpAdd           = flow.OpAdd
	OpDel           = flow.OpDel
	KindListener    = flow.KindListener
	KindEstablished = flow.KindEstablished
)

// Error codes of the control protocol.
const (
	CodeOK               = flow.CodeOK
	CodeUnknown          = flow.CodeUnknown
	CodeNotAttached      = flow.CodeNotAttached
	CodeAlreadyAttached  = flow.CodeAlreadyAttached
	CodeInvalidNamespace = flow.CodeInvalidNamespace
	CodeWrongSecret      = flow.CodeWrongSecret
	CodeNamespaceInUse   = flow.CodeNamespaceInUse
	CodeNamespaceExists  = flow.CodeNamespaceExists
	CodeAddressInUse     = flow.CodeAddressInUse
	CodeAddressNotInUse  = flow.CodeAddressNotInUse
	CodeNotInNamespace   = flow.CodeNotInNamespace
	CodeFiltered         = flow.CodeFiltered
	CodeScope            = flow.CodeScope
	CodeLocalConnect     = flow.CodeLocalConnect
	CodeNoSession        = flow.CodeNoSession
	CodeNotOwner         = flow.CodeNotOwner
	CodeNotSupported     = flow.CodeNotSupported
	CodeInvalidURI       = flow.CodeInvalidURI
	CodeInvalidValue     = flow.CodeInvalidValue
	CodeNoMemory         = flow.CodeNoMemory
	CodeNoRule           = flow.CodeNoRule
	CodeConnect          = flow.CodeConnect
)

// Sentinel errors; errors.Is matches them across the control socket.
var (
	ErrNotAttached      = flow.ErrNotAttached
	ErrAlreadyAttached  = flow.ErrAlreadyAttached
	ErrInvalidNamespace = flow.ErrInvalidNamespace
	ErrWrongSecret      = flow.ErrWrongSecret
	ErrNamespaceInUse   = flow.ErrNamespaceInUse
	ErrNamespaceExists  = flow.ErrNamespaceExists
	ErrAddressInUse     = flow.ErrAddressInUse
	ErrAddressNotInUse  = flow.ErrAddressNotInUse
	ErrNotInNamespace   = flow.ErrNotInNamespace
	ErrFiltered         = flow.ErrFiltered
	ErrScope            = flow.ErrScope
	ErrLocalConnect     = flow.ErrLocalConnect
	ErrNoSession        = flow.ErrNoSession
	ErrNotOwner         = flow.ErrNotOwner
	ErrNotSupported     = flow.ErrNotSupported
	ErrInvalidURI       = flow.ErrInvalidURI
	ErrInvalidValue     = flow.ErrInvalidValue
	ErrNoMemory         = flow.ErrNoMemory
	ErrNoRule           = flow.ErrNoRule
	ErrConnect          = flow.ErrConnect
)

// Functions on the shared types.
var (
	MakeHandle               = flow.MakeHandle
	AddrBytes                = flow.AddrBytes
	AddrFrom                 = flow.AddrFrom
	CodeOf                   = flow.CodeOf
	ParseURI                 = flow.ParseURI
	LocalListenerHandle      = flow.LocalListenerHandle
	ParseLocalListenerHandle = flow.ParseLocalListenerHandle
)
