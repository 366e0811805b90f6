package api

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/xsessiond/xsessiond/flow"
)

// Protocol constants. Changing any of them is a protocol change.
const (
	// Magic opens every record: the bytes 'X' 'S' on the wire.
	Magic uint16 = 0x5358
	// VersionMajor is the protocol's major version, carried in every
	// record header and in Hello. Peers of different major versions do not
	// talk.
	VersionMajor uint8 = 2
	// VersionMinor grows when messages or fields are added compatibly.
	VersionMinor uint8 = 5

	// HeaderSize is the size of the fixed record header.
	HeaderSize = 16
	// MaxRecordSize bounds one record, header included.
	MaxRecordSize = 64 << 10
	// MaxBodySize bounds one record's body.
	MaxBodySize = MaxRecordSize - HeaderSize
	// MaxFDs bounds the descriptors carried by one record.
	MaxFDs = 64
	// MaxReassembled bounds a message sent as several records (FlagMore).
	MaxReassembled = 16 << 20
)

// Per-field limits, checked when encoding and when decoding.
const (
	MaxNameLen         = 64   // app names, namespace ids, rule tags, Hello names
	MaxURILen          = 256  // bind and connect URIs
	MaxIfaceLen        = 15   // interface names (IFNAMSIZ-1)
	MaxNetnsLen        = 255  // network namespace names
	MaxMessageLen      = 1024 // Error message text
	MaxProxyTransports = 8    // Attach.ProxyTransports
	MaxSegmentIDs      = 256  // SegmentRemoved.Segments
	// MaxSegmentFDs bounds the segments (each with its descriptor) in an
	// AttachReply, which also carries the event queue's epoll set and the
	// workers' kick eventfds.
	MaxSegmentFDs = 7
	// MaxKickFDs bounds the worker kick eventfds of an AttachReply.
	MaxKickFDs = 32
	// MaxReasonLen bounds the text of a Shutdown notice.
	MaxReasonLen = 256
)

// maxShowChunk is the most JSON one ShowReply record carries.
const maxShowChunk = MaxBodySize - 4

// Flags are the header's flag bits.
type Flags uint8

// Header flags.
const (
	// FlagMore marks a record that is followed by more records of the
	// same message (same type and request id). Only ShowReply uses it.
	FlagMore Flags = 1 << 0

	knownFlags = FlagMore
)

// Header is the fixed 16-byte header of a record, little-endian:
//
//	offset size field
//	0      2    magic (Magic)
//	2      1    version (VersionMajor)
//	3      1    flags
//	4      2    message type
//	6      2    reserved, zero
//	8      4    request id (0: unsolicited notice)
//	12     4    body length (the record's length minus HeaderSize)
type Header struct {
	Version uint8
	Flags   Flags
	Type    Type
	ID      uint32
	Length  uint32
}

func putHeader(b []byte, h Header) {
	binary.LittleEndian.PutUint16(b[0:], Magic)
	b[2] = h.Version
	b[3] = uint8(h.Flags)
	binary.LittleEndian.PutUint16(b[4:], uint16(h.Type))
	binary.LittleEndian.PutUint16(b[6:], 0)
	binary.LittleEndian.PutUint32(b[8:], h.ID)
	binary.LittleEndian.PutUint32(b[12:], h.Length)
}

// Preallocated decode errors: bad input costs no allocation.
var (
	errShortHeader  = malformed(ErrMalformed, "record shorter than the %d-byte header", HeaderSize)
	errMagic        = malformed(ErrMalformed, "bad magic")
	errReserved     = malformed(ErrMalformed, "reserved header bits set")
	errFlags        = malformed(ErrMalformed, "unknown header flags")
	errLength       = malformed(ErrMalformed, "body length does not match the record")
	errVersion      = malformed(ErrVersion, "record version is not %d", VersionMajor)
	errRecordSize   = malformed(ErrTooLarge, "record exceeds %d bytes", MaxRecordSize)
	errUnknownType  = malformed(ErrUnknownType, "no such message type")
	errShortBody    = malformed(ErrMalformed, "body ends inside a field")
	errTrailing     = malformed(ErrMalformed, "bytes after the last field")
	errBool         = malformed(ErrMalformed, "boolean is neither 0 nor 1")
	errUTF8         = malformed(ErrMalformed, "string is not valid UTF-8")
	errFamily       = malformed(ErrMalformed, "bad address family")
	errAddrPadding  = malformed(ErrMalformed, "address bytes beyond the family's length")
	errPrefixBits   = malformed(ErrMalformed, "prefix length out of range")
	errIfIndex      = malformed(ErrMalformed, "interface index out of range")
	errDuration     = malformed(ErrMalformed, "duration out of range")
	errMoreNotAllow = malformed(ErrMalformed, "continuation flag on a message type that has none")
	errListEmpty    = malformed(ErrMalformed, "list must not be empty")
	errShowPage     = malformed(ErrMalformed, "show page with neither a start nor a limit")
)

// DecodeHeader checks and returns the header of rec. It checks the magic,
// version, flags, reserved bits, and that the body length matches rec; it
// does not look at the type.
func DecodeHeader(rec []byte) (Header, error) {
	if len(rec) < HeaderSize {
		return Header{}, errShortHeader
	}
	h := Header{
		Version: rec[2],
		Flags:   Flags(rec[3]),
		Type:    Type(binary.LittleEndian.Uint16(rec[4:])),
		ID:      binary.LittleEndian.Uint32(rec[8:]),
		Length:  binary.LittleEndian.Uint32(rec[12:]),
	}
	if binary.LittleEndian.Uint16(rec[0:]) != Magic {
		return h, errMagic
	}
	if h.Version != VersionMajor {
		return h, errVersion
	}
	if len(rec) > MaxRecordSize {
		return h, errRecordSize
	}
	if h.Flags&^knownFlags != 0 {
		return h, errFlags
	}
	if rec[6] != 0 || rec[7] != 0 {
		return h, errReserved
	}
	if uint64(h.Length) != uint64(len(rec)-HeaderSize) {
		return h, errLength
	}
	return h, nil
}

// encoder appends fields; the first error sticks and later calls do
// nothing.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

func (e *encoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// str appends a string as a uint16 length and its bytes.
func (e *encoder) str(s string, max int, field string) {
	if len(s) > max {
		e.fail(malformed(ErrFieldTooLong, "%s is %d bytes, limit %d", field, len(s), max))
		return
	}
	if !utf8.ValidString(s) {
		e.fail(malformed(ErrMalformed, "%s is not valid UTF-8", field))
		return
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// blob appends bytes as a uint32 length and the bytes.
func (e *encoder) blob(p []byte, max int, field string) {
	if len(p) > max {
		e.fail(malformed(ErrFieldTooLong, "%s is %d bytes, limit %d", field, len(p), max))
		return
	}
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}

// listLen appends the uint16 length of a list after checking it.
func (e *encoder) listLen(n, min, max int, field string) bool {
	if n > max {
		e.fail(malformed(ErrFieldTooLong, "%s has %d entries, limit %d", field, n, max))
		return false
	}
	if n < min {
		e.fail(malformed(ErrMalformed, "%s must not be empty", field))
		return false
	}
	e.u16(uint16(n))
	return true
}

// addr appends an address as a family byte (0: none, 4, 6) and 16 bytes;
// an IPv4 address fills the first 4 of them. Zones are not carried.
func (e *encoder) addr(a netip.Addr) {
	var b [16]byte
	switch {
	case !a.IsValid():
		e.u8(0)
	case a.Is4():
		e.u8(flow.Family4)
		v := a.As4()
		copy(b[:], v[:])
	default:
		e.u8(flow.Family6)
		b = a.As16()
	}
	e.b = append(e.b, b[:]...)
}

// endpoint appends: transport u8, family u8, address [16], port u16,
// ifindex u32, fib u32.
func (e *encoder) endpoint(ep flow.Endpoint) {
	if ep.IfIndex < 0 || int64(ep.IfIndex) > 0x7fffffff {
		e.fail(malformed(ErrMalformed, "interface index %d out of range", ep.IfIndex))
		return
	}
	e.u8(uint8(ep.Transport))
	e.addr(ep.Addr)
	e.u16(ep.Port)
	e.u32(uint32(ep.IfIndex))
	e.u32(uint32(ep.FIB))
}

// prefix appends: family u8 (0: none), bits u8, address [16].
func (e *encoder) prefix(p netip.Prefix, field string) {
	a := p.Addr()
	if !a.IsValid() {
		e.u8(0)
		e.u8(0)
		e.b = append(e.b, make([]byte, 16)...)
		return
	}
	if !p.IsValid() {
		e.fail(malformed(ErrMalformed, "%s: invalid prefix %v", field, p))
		return
	}
	fam := flow.Family6
	var b [16]byte
	if a.Is4() {
		fam = flow.Family4
		v := a.As4()
		copy(b[:], v[:])
	} else {
		b = a.As16()
	}
	e.u8(fam)
	e.u8(uint8(p.Bits()))
	e.b = append(e.b, b[:]...)
}

// decoder reads fields from a body; the first error sticks and later
// reads return zero values.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.fail(errShortBody)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail(errBool)
	return false
}

func (d *decoder) str(max int, field string) string {
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if n > max {
		d.fail(malformed(ErrFieldTooLong, "%s is %d bytes, limit %d", field, n, max))
		return ""
	}
	p := d.take(n)
	if d.err != nil || n == 0 {
		return ""
	}
	if !utf8.Valid(p) {
		d.fail(errUTF8)
		return ""
	}
	return string(p)
}

func (d *decoder) blob(max int, field string) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.fail(malformed(ErrFieldTooLong, "%s is %d bytes, limit %d", field, n, max))
		return nil
	}
	p := d.take(int(n))
	if d.err != nil || n == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) listLen(min, max int, field string) int {
	n := int(d.u16())
	if d.err != nil {
		return 0
	}
	if n > max {
		d.fail(malformed(ErrFieldTooLong, "%s has %d entries, limit %d", field, n, max))
		return 0
	}
	if n < min {
		d.fail(errListEmpty)
		return 0
	}
	return n
}

func (d *decoder) addr() netip.Addr {
	fam := d.u8()
	p := d.take(16)
	if d.err != nil {
		return netip.Addr{}
	}
	switch fam {
	case 0:
		if !allZero(p) {
			d.fail(errAddrPadding)
		}
		return netip.Addr{}
	case flow.Family4:
		if !allZero(p[4:]) {
			d.fail(errAddrPadding)
			return netip.Addr{}
		}
		return netip.AddrFrom4([4]byte(p[:4]))
	case flow.Family6:
		return netip.AddrFrom16([16]byte(p))
	}
	d.fail(errFamily)
	return netip.Addr{}
}

func (d *decoder) endpoint() flow.Endpoint {
	var ep flow.Endpoint
	ep.Transport = flow.Transport(d.u8())
	ep.Addr = d.addr()
	ep.Port = d.u16()
	ifi := d.u32()
	if ifi > 0x7fffffff {
		d.fail(errIfIndex)
	}
	ep.IfIndex = int(ifi)
	ep.FIB = flow.FIBID(d.u32())
	return ep
}

func (d *decoder) prefix() netip.Prefix {
	fam := d.u8()
	bits := int(d.u8())
	p := d.take(16)
	if d.err != nil {
		return netip.Prefix{}
	}
	switch fam {
	case 0:
		if bits != 0 || !allZero(p) {
			d.fail(errAddrPadding)
		}
		return netip.Prefix{}
	case flow.Family4:
		if !allZero(p[4:]) {
			d.fail(errAddrPadding)
			return netip.Prefix{}
		}
		if bits > 32 {
			d.fail(errPrefixBits)
			return netip.Prefix{}
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(p[:4])), bits)
	case flow.Family6:
		if bits > 128 {
			d.fail(errPrefixBits)
			return netip.Prefix{}
		}
		return netip.PrefixFrom(netip.AddrFrom16([16]byte(p)), bits)
	}
	d.fail(errFamily)
	return netip.Prefix{}
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

func toValidUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
