package fifo

import "github.com/xsessiond/xsessiond/internal/shmsync"

// Datagram framing. A datagram fifo carries records of a DgramHeaderSize
// header followed by the payload, padded to DgramAlign bytes (the padding's
// content is unspecified). Records are queued and removed whole; the
// stream calls must not be mixed with the datagram calls on one fifo.

// dgramRecord returns the record size of an n-byte payload, false if it can
// never fit in the fifo.
func (f *Fifo) dgramRecord(n int) (uint32, bool) {
	if n < 0 || n > int(f.size) {
		return 0, false
	}
	rec := uint32(DgramRecordSize(n))
	return rec, rec <= f.size
}

// putDgram writes one record at the private tail without publishing it.
func (f *Fifo) putDgram(h *DgramHeader, payload []byte, rec uint32) {
	var hb [DgramHeaderSize]byte
	h.encode(&hb, uint32(len(payload)))
	t := f.p.tail
	f.write(t, hb[:])
	f.write(t+DgramHeaderSize, payload)
	f.p.tail = t + rec
}

// EnqueueDgram queues one datagram: h (its Len is ignored; len(payload) is
// written) and payload. It returns ErrNoSpace when the record does not fit
// now and ErrTooLarge when it never can; nothing is queued then.
func (f *Fifo) EnqueueDgram(h *DgramHeader, payload []byte) error {
	rec, fits := f.dgramRecord(len(payload))
	if !fits {
		return ErrTooLarge
	}
	free, ok := f.prodFree(rec)
	if !ok {
		return ErrCorrupt
	}
	if free < rec {
		return ErrNoSpace
	}
	f.putDgram(h, payload, rec)
	shmsync.Store32(f.tail, f.p.tail)
	return nil
}

// EnqueueDgrams queues datagrams hs[i] with payloads[i] in order, as many
// as fit, and publishes them with one store. It returns how many were
// queued and, when that is fewer than min(len(hs), len(payloads)), why the
// next one was not (ErrNoSpace, ErrTooLarge or ErrCorrupt).
func (f *Fifo) EnqueueDgrams(hs []DgramHeader, payloads [][]byte) (int, error) {
	n := min(len(hs), len(payloads))
	var err error
	i := 0
	for ; i < n; i++ {
		rec, fits := f.dgramRecord(len(payloads[i]))
		if !fits {
			err = ErrTooLarge
			break
		}
		free, ok := f.prodFree(rec)
		if !ok {
			err = ErrCorrupt
			break
		}
		if free < rec {
			err = ErrNoSpace
			break
		}
		f.putDgram(&hs[i], payloads[i], rec)
	}
	if i > 0 {
		shmsync.Store32(f.tail, f.p.tail)
	}
	return i, err
}

// nextDgram reads and validates the header of the datagram at the private
// head into h and returns its record size. The header is copied out of
// shared memory once and only the copy is used.
func (f *Fifo) nextDgram(h *DgramHeader) (uint32, error) {
	used, ok := f.consUsed(DgramHeaderSize)
	if !ok {
		return 0, ErrCorrupt
	}
	if used == 0 {
		return 0, ErrEmpty
	}
	if used < DgramHeaderSize {
		return 0, ErrCorrupt
	}
	var hb [DgramHeaderSize]byte
	f.read(f.c.head, hb[:])
	h.decode(&hb)
	if h.Len > f.size-DgramHeaderSize {
		return 0, ErrCorrupt
	}
	rec := uint32(DgramRecordSize(int(h.Len)))
	if rec > used {
		if used, ok = f.consUsed(rec); !ok || rec > used {
			return 0, ErrCorrupt
		}
	}
	return rec, nil
}

// DequeueDgram removes the next datagram, fills h (Len is the payload
// length) and copies its payload into buf, returning the payload length.
// It returns ErrEmpty when no datagram is queued and ErrShortBuffer, with
// the datagram left in place and h filled, when buf is shorter than the
// payload.
func (f *Fifo) DequeueDgram(h *DgramHeader, buf []byte) (int, error) {
	rec, err := f.nextDgram(h)
	if err != nil {
		return 0, err
	}
	if int(h.Len) > len(buf) {
		return 0, ErrShortBuffer
	}
	hd := f.c.head
	f.read(hd+DgramHeaderSize, buf[:h.Len])
	f.publishHead(hd + rec)
	return int(h.Len), nil
}

// DequeueDgrams removes datagrams in order into hs[i] and bufs[i] (the
// payload is bufs[i][:hs[i].Len]), as many as are queued and as the slices
// hold, and hands the space back with one store. It returns how many were
// removed; the error is ErrEmpty when none was queued, or the reason the
// next one was not removed (ErrShortBuffer: bufs[n] is too short, hs[n] is
// filled; ErrCorrupt).
func (f *Fifo) DequeueDgrams(hs []DgramHeader, bufs [][]byte) (int, error) {
	n := min(len(hs), len(bufs))
	var err error
	i := 0
	hd := f.c.head
	for ; i < n; i++ {
		rec, e := f.nextDgram(&hs[i])
		if e != nil {
			if e != ErrEmpty || i == 0 {
				err = e
			}
			break
		}
		if int(hs[i].Len) > len(bufs[i]) {
			err = ErrShortBuffer
			break
		}
		f.read(f.c.head+DgramHeaderSize, bufs[i][:hs[i].Len])
		f.c.head += rec
	}
	if f.c.head != hd {
		shmsync.Store32(f.head, f.c.head)
	}
	return i, err
}

// PeekDgram fills h from the next datagram and returns its payload as at
// most two slices of shared memory (the second when it wraps), leaving the
// datagram queued; DropDgram removes it. It returns ErrEmpty when no
// datagram is queued.
func (f *Fifo) PeekDgram(h *DgramHeader) (a, b []byte, err error) {
	if _, err := f.nextDgram(h); err != nil {
		return nil, nil, err
	}
	if h.Len == 0 {
		return nil, nil, nil
	}
	a, b = f.slices(f.c.head+DgramHeaderSize, h.Len)
	return a, b, nil
}

// DropDgram removes the next datagram and returns its payload length. It
// validates the header again, so it removes a whole record even if a
// misbehaving peer changed the header since PeekDgram.
func (f *Fifo) DropDgram() (int, error) {
	var h DgramHeader
	rec, err := f.nextDgram(&h)
	if err != nil {
		return 0, err
	}
	f.publishHead(f.c.head + rec)
	return int(h.Len), nil
}
