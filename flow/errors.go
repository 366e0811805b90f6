package flow

import (
	"errors"
	"syscall"
)

// Errors of the session layer. They travel over the control socket as Codes
// and are turned back into these same values by package app, so errors.Is
// works in applications.
var (
	ErrNotAttached      = errors.New("app is not attached")
	ErrAlreadyAttached  = errors.New("app is already attached")
	ErrInvalidNamespace = errors.New("no such namespace")
	ErrWrongSecret      = errors.New("wrong namespace secret")
	ErrNamespaceInUse   = errors.New("namespace has apps attached")
	ErrNamespaceExists  = errors.New("namespace already exists")
	ErrAddressInUse     = errors.New("address already in use")
	ErrAddressNotInUse  = errors.New("address not in use")
	ErrNotInNamespace   = errors.New("address does not belong to the namespace")
	ErrFiltered         = errors.New("connect filtered by a rule")
	ErrScope            = errors.New("app has no scope to reach that destination")
	ErrNoSession        = errors.New("no such session")
	ErrNotOwner         = errors.New("session belongs to another app")
	ErrNotSupported     = errors.New("not supported")
	ErrInvalidURI       = errors.New("invalid URI")
	ErrInvalidValue     = errors.New("invalid value")
	ErrNoMemory         = errors.New("out of fifo memory")
	ErrNoRule           = errors.New("no such rule")
	ErrConnect          = errors.New("connect failed")
	ErrPermission       = errors.New("operation not permitted")
	ErrLimit            = errors.New("limit reached")
	// Why a stream's connect failed: each wraps the errno a socket
	// reports, so errors.Is(err, syscall.ECONNREFUSED) holds too.
	ErrRefused     error = &errnoError{"connection refused", syscall.ECONNREFUSED}
	ErrTimedOut    error = &errnoError{"connection timed out", syscall.ETIMEDOUT}
	ErrUnreachable error = &errnoError{"destination unreachable", syscall.EHOSTUNREACH}
	// ErrNetUnreachable: no route to the destination's network, or a
	// destination no connection of the transport can go to (a TCP
	// connect to a broadcast or multicast address), as a kernel socket
	// reports ENETUNREACH. CodeOf gives its code to any error wrapping
	// ENETUNREACH that names no other sentinel.
	ErrNetUnreachable error = &errnoError{"network is unreachable", syscall.ENETUNREACH}
	// ErrReset: the peer reset the connection as its handshake completed,
	// before the connect was reported (a server that accepts and resets
	// at once); a kernel socket's connect reports ECONNRESET then too.
	ErrReset error = &errnoError{"connection reset by peer", syscall.ECONNRESET}
	// ErrLocalConnect: a connect to a local address (loopback) that no
	// app listens on, refused as the kernel refuses one to a port of
	// 127.0.0.1 nobody listens on.
	ErrLocalConnect error = &errnoError{"local destination has no listener", syscall.ECONNREFUSED}
	// ErrFifoCorrupt is why the daemon reset a stream session whose app
	// left its rx or tx fifo's indices in a state no producer or consumer
	// following fifo/ABI.md makes (more than the fifo's size apart). It
	// wraps syscall.EIO.
	ErrFifoCorrupt error = &errnoError{"fifo corrupt", syscall.EIO}
	// ErrBrokenPipe: the peer reset a connection it had closed (its FIN
	// came first), as a peer that closed its socket answers what is sent
	// to it after. Linux reports EPIPE to the writes that follow, and
	// the reads keep returning the end of the stream.
	ErrBrokenPipe error = &errnoError{"broken pipe: the peer closed and reset the connection", syscall.EPIPE}
	// ErrProhibited: the route to the destination is a prohibit route
	// (ip route add prohibit PREFIX), which fails a kernel socket's
	// connect with EACCES.
	ErrProhibited error = &errnoError{"the route to the destination prohibits it", syscall.EACCES}
	// ErrBlackhole: the route to the destination is a blackhole route
	// (ip route add blackhole PREFIX), which fails a kernel socket's
	// connect with EINVAL.
	ErrBlackhole error = &errnoError{"the route to the destination is a blackhole", syscall.EINVAL}
	// ErrHostSocket: a connect to an address of this host whose port a
	// kernel socket holds there (a kernel program's listener, say) and no
	// app listens on. The datapath does not reach the host's own sockets;
	// the app library's Dial reaches it with a kernel socket of the app's
	// process.
	ErrHostSocket = errors.New("a kernel socket of this host holds the destination")
)

// errnoError is a sentinel that unwraps to the errno a socket would report.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }
func (e *errnoError) Unwrap() error { return e.errno }

// Code is the wire form of an error of this package. Zero means success;
// CodeUnknown stands for an error that is not one of the sentinels.
type Code uint16

// Error codes. Their values are part of the control protocol: never reuse or
// renumber one.
const (
	CodeOK Code = iota
	CodeUnknown
	CodeNotAttached
	CodeAlreadyAttached
	CodeInvalidNamespace
	CodeWrongSecret
	CodeNamespaceInUse
	CodeNamespaceExists
	CodeAddressInUse
	CodeAddressNotInUse
	CodeNotInNamespace
	CodeFiltered
	CodeScope
	CodeLocalConnect
	CodeNoSession
	CodeNotOwner
	CodeNotSupported
	CodeInvalidURI
	CodeInvalidValue
	CodeNoMemory
	CodeNoRule
	CodeConnect
	CodePermission
	CodeLimit
	CodeRefused
	CodeTimedOut
	CodeUnreachable
	CodeFifoCorrupt
	CodeReset
	CodeBrokenPipe
	CodeNetUnreachable
	CodeHostSocket
	CodeProhibited
	CodeBlackhole
)

var codeErrors = [...]error{
	CodeNotAttached:      ErrNotAttached,
	CodeAlreadyAttached:  ErrAlreadyAttached,
	CodeInvalidNamespace: ErrInvalidNamespace,
	CodeWrongSecret:      ErrWrongSecret,
	CodeNamespaceInUse:   ErrNamespaceInUse,
	CodeNamespaceExists:  ErrNamespaceExists,
	CodeAddressInUse:     ErrAddressInUse,
	CodeAddressNotInUse:  ErrAddressNotInUse,
	CodeNotInNamespace:   ErrNotInNamespace,
	CodeFiltered:         ErrFiltered,
	CodeScope:            ErrScope,
	CodeLocalConnect:     ErrLocalConnect,
	CodeNoSession:        ErrNoSession,
	CodeNotOwner:         ErrNotOwner,
	CodeNotSupported:     ErrNotSupported,
	CodeInvalidURI:       ErrInvalidURI,
	CodeInvalidValue:     ErrInvalidValue,
	CodeNoMemory:         ErrNoMemory,
	CodeNoRule:           ErrNoRule,
	CodeConnect:          ErrConnect,
	CodePermission:       ErrPermission,
	CodeLimit:            ErrLimit,
	CodeRefused:          ErrRefused,
	CodeTimedOut:         ErrTimedOut,
	CodeUnreachable:      ErrUnreachable,
	CodeFifoCorrupt:      ErrFifoCorrupt,
	CodeReset:            ErrReset,
	CodeBrokenPipe:       ErrBrokenPipe,
	CodeNetUnreachable:   ErrNetUnreachable,
	CodeHostSocket:       ErrHostSocket,
	CodeProhibited:       ErrProhibited,
	CodeBlackhole:        ErrBlackhole,
}

// CodeOf returns the code of the sentinel err wraps, CodeOK for nil, and
// CodeUnknown for any other error. ErrConnect, which says only that a
// connect failed, gives way to any other sentinel err wraps with it (a
// connect refused as unreachable is CodeUnreachable: the app's errors.Is
// finds EHOSTUNREACH), and to ENETUNREACH (no route: CodeNetUnreachable).
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	for c, e := range codeErrors {
		if e != nil && e != ErrConnect && errors.Is(err, e) {
			return Code(c)
		}
	}
	if errors.Is(err, syscall.ENETUNREACH) {
		return CodeNetUnreachable
	}
	if errors.Is(err, ErrConnect) {
		return CodeConnect
	}
	return CodeUnknown
}

// Err returns the sentinel of c, nil for CodeOK, and nil with ok false for
// CodeUnknown or a code this version does not know.
func (c Code) Err() (err error, ok bool) {
	if c == CodeOK {
		return nil, true
	}
	if int(c) < len(codeErrors) && codeErrors[c] != nil {
		return codeErrors[c], true
	}
	return nil, false
}
