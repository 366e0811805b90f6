package api

// AppendRecord appends the record of m (header and body) to b and returns
// the extended slice. It fails, leaving b's contents unchanged, when a
// field breaks its limit or the record exceeds MaxRecordSize; the error
// then wraps ErrMalformed (ErrFieldTooLong or ErrTooLarge).
func AppendRecord(b []byte, id uint32, flags Flags, m Message) ([]byte, error) {
	var e encoder
	return e.record(b, id, flags, m)
}

// record is AppendRecord with a caller-owned encoder, which must not
// escape for every call (a Conn keeps one).
func (e *encoder) record(b []byte, id uint32, flags Flags, m Message) ([]byte, error) {
	if flags&^knownFlags != 0 {
		return b, errFlags
	}
	if flags&FlagMore != 0 && m.Type() != TypeShowReply {
		return b, errMoreNotAllow
	}
	start := len(b)
	b = append(b, make([]byte, HeaderSize)...)
	*e = encoder{b: b}
	m.encode(e)
	out, err := e.b, e.err
	*e = encoder{}
	if err != nil {
		return out[:start], err
	}
	n := len(out) - start
	if n > MaxRecordSize {
		return out[:start], errRecordSize
	}
	putHeader(out[start:], Header{
		Version: VersionMajor,
		Flags:   flags,
		Type:    m.Type(),
		ID:      id,
		Length:  uint32(n - HeaderSize),
	})
	return out, nil
}

// Decode decodes one record. It never keeps a reference to rec. On error
// the returned header holds what could be read of it (its ID lets a
// server answer the offending request); the error wraps ErrMalformed.
//
// Decode is strict: every accepted record re-encodes to the same bytes.
func Decode(rec []byte) (Header, Message, error) {
	var d decoder
	return d.record(rec)
}

// record is Decode with a caller-owned decoder (a Conn keeps one).
func (d *decoder) record(rec []byte) (Header, Message, error) {
	h, err := DecodeHeader(rec)
	if err != nil {
		return h, nil, err
	}
	m := newMessage(h.Type)
	if m == nil {
		return h, nil, errUnknownType
	}
	if h.Flags&FlagMore != 0 && h.Type != TypeShowReply {
		return h, nil, errMoreNotAllow
	}
	*d = decoder{b: rec[HeaderSize:]}
	m.decode(d)
	err = d.err
	if err == nil && d.off != len(d.b) {
		err = errTrailing
	}
	*d = decoder{} // drop the reference to rec
	if err != nil {
		return h, nil, err
	}
	return h, m, nil
}
