package api

import (
	"errors"
	"fmt"

	"github.com/xsessiond/xsessiond/flow"
)

// Errors of the control protocol.
//
// Every error about the bytes or file descriptors a peer sent wraps
// ErrMalformed, so one errors.Is(err, ErrMalformed) tells a protocol
// violation from a transport failure. The more specific sentinels below it
// (ErrTooLarge, ErrUnknownType, ErrVersion, ErrFieldTooLong, ErrUnexpectedFDs,
// ErrTruncated) also satisfy errors.Is(err, ErrMalformed).
var (
	ErrMalformed = errors.New("api: malformed message")

	ErrTooLarge      error = &protoError{"api: message exceeds its size limit"}
	ErrUnknownType   error = &protoError{"api: unknown message type"}
	ErrVersion       error = &protoError{"api: incompatible protocol version"}
	ErrFieldTooLong  error = &protoError{"api: field exceeds its limit"}
	ErrUnexpectedFDs error = &protoError{"api: wrong number of file descriptors for the message"}
	ErrTruncated     error = &protoError{"api: record or its control data was truncated"}

	// ErrDaemonRunning is returned by Listen when a live daemon already
	// owns the socket.
	ErrDaemonRunning = errors.New("api: another daemon is running on the socket")
	// ErrNoDaemon is returned by Dial when nothing listens on the socket
	// (no socket file, or a stale one). It is wrapped together with the
	// errno the kernel gave.
	ErrNoDaemon = errors.New("api: no daemon is running on the socket")
	// ErrClosed is returned by operations on a closed Conn, Client or
	// Listener.
	ErrClosed = errors.New("api: connection closed")
	// ErrBadFDs is returned by Send when the number of descriptors passed
	// does not match what the message says it carries.
	ErrBadFDs = errors.New("api: descriptor count does not match the message")
	// ErrUnexpectedReply is returned by Do when the reply has another type
	// than the one asked for.
	ErrUnexpectedReply = errors.New("api: unexpected reply type")
	// ErrRemote is matched by every error that came back from the peer as an
	// Error reply (see RemoteError).
	ErrRemote = errors.New("api: request failed in the daemon")
)

// protoError is a sentinel that is also an ErrMalformed.
type protoError struct{ s string }

func (e *protoError) Error() string        { return e.s }
func (e *protoError) Is(target error) bool { return target == ErrMalformed }

// malformed returns an error wrapping ErrMalformed (or the more specific
// sentinel kind) with detail text.
func malformed(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)
}

// RemoteError is an Error reply turned back into a Go error. It unwraps to
// the sessions sentinel of its Code (when this version knows the code), so
// errors.Is(err, flow.ErrAddressInUse) works on the app side, and it
// matches ErrRemote.
type RemoteError struct {
	Code    flow.Code
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if err, ok := e.Code.Err(); ok && err != nil {
		return err.Error()
	}
	return fmt.Sprintf("error code %d", uint16(e.Code))
}

// Unwrap returns the sessions sentinel of e.Code, or nil.
func (e *RemoteError) Unwrap() error {
	err, _ := e.Code.Err()
	return err
}

// Is reports whether target is ErrRemote.
func (e *RemoteError) Is(target error) bool { return target == ErrRemote }

// ErrorReply builds the Error reply for err: its code is the code of the
// sessions sentinel err wraps (CodeUnknown for others) and its message is
// err's text, cut to MaxMessageLen bytes at a UTF-8 boundary.
func ErrorReply(err error) *Error {
	if err == nil {
		return &Error{Code: flow.CodeUnknown, Message: "unknown error"}
	}
	return &Error{Code: flow.CodeOf(err), Message: truncateUTF8(err.Error(), MaxMessageLen)}
}

// ErrorReplyFor is ErrorReply for a client that said protocol minor
// version minor in its Hello: a code added after that version is sent as
// the code that version knew for the same error, so that the client's
// errors.Is finds what it found before: flow.CodeHostSocket (2.5) as
// flow.CodeConnect, flow.CodeProhibited and flow.CodeBlackhole (2.5) as
// flow.CodeNetUnreachable.
func ErrorReplyFor(err error, minor uint8) *Error {
	e := ErrorReply(err)
	if minor < 5 {
		switch e.Code {
		case flow.CodeHostSocket:
			e.Code = flow.CodeConnect
		case flow.CodeProhibited, flow.CodeBlackhole:
			e.Code = flow.CodeNetUnreachable
		}
	}
	return e
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune and
// replaces invalid UTF-8, so the result always encodes.
func truncateUTF8(s string, n int) string {
	s = toValidUTF8(s)
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !isRuneStart(s[i]) {
		i--
	}
	return s[:i]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
