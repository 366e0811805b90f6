package loader

import "errors"

// Errors returned by this package. They are wrapped with context; test them
// with errors.Is.
var (
	// ErrClosed is returned by operations on closed objects.
	ErrClosed = errors.New("loader: closed")
	// ErrAttached is returned when objects that are already attached are
	// attached again.
	ErrAttached = errors.New("loader: already attached")
	// ErrForeignProgram is returned when the interface already runs an XDP
	// program that is not xsessiond's and AttachOptions.Replace is false.
	ErrForeignProgram = errors.New("loader: interface runs another XDP program")
	// ErrInvalidOptions is returned for options that cannot be used.
	ErrInvalidOptions = errors.New("loader: invalid options")
	// ErrLocalsFull: the namespace has more addresses than the locals map
	// holds; packets to the others on a wildcard listener's port take the
	// kernel path (LocalMap.Set).
	ErrLocalsFull = errors.New("loader: more local addresses than the locals map holds")
	// ErrInvalidKey is returned for a map key the program could never match:
	// a family other than 4 or 6, a transport other than UDP or TCP, an
	// IPv4 address with bytes beyond the first four, or a bad ifindex.
	ErrInvalidKey = errors.New("loader: invalid key")
	// ErrNotFound is returned when deleting or looking up a missing entry.
	ErrNotFound = errors.New("loader: entry not found")
	// ErrResyncNeeded is returned by Mirror.Apply for a change that does not
	// follow the last applied one; the mirror refuses further changes until
	// Resync.
	ErrResyncNeeded = errors.New("loader: change out of order, resync needed")
	// ErrInvalidChange is returned by Mirror.Apply for a change with an
	// unknown op or kind, or an invalid key. The change is skipped.
	ErrInvalidChange = errors.New("loader: invalid change")
	// ErrNotComparable is returned by Mirror.Check when the source's
	// snapshot is not at the sequence number the mirror has applied, so the
	// two cannot be compared yet.
	ErrNotComparable = errors.New("loader: snapshot and maps at different sequence numbers")
)
