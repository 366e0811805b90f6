package datapath

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
)

// The sleep flags page tells apps which workers need a kick (api.SleepFlags):
// a memfd of api.SleepFlagsSize bytes, one api.SleepFlagStride-byte line
// per worker, whose first word the worker sets while it sleeps in poll(2)
// and clears when it wakes. A worker that is awake (working, spinning or
// napping) looks at every tx fifo it serves without being told, so an app
// kicks it only when its word is set: on a busy queue that saves the
// app an eventfd write, a system call, per request (a worker asleep in a
// nap reads no eventfd either: a kick then only wakes its next poll).
//
// The order that loses no kick: the worker sets its word, then looks at
// the fifos' event flags once more before it sleeps; an app sets a fifo's
// event flag, then reads the word. Both are sequentially consistent
// atomics, so at least one of them sees the other's write: the worker
// finds the flag and does not sleep, or the app finds the word set and
// kicks.
//
// The page is sealed against writes from anyone but the daemon's own
// mapping, made before the seal (F_SEAL_FUTURE_WRITE): an app can map it
// only read-only, so no app can make another's kicks go missing. An app
// that ignores the page and kicks always costs the worker the wake-ups it
// costs today.
type sleepPage struct {
	fd  int
	mem []byte
}

// newSleepPage makes the page with every word set: a worker not yet
// running (or stopped) is kicked.
func newSleepPage() (*sleepPage, error) {
	fd, err := unix.MemfdCreate("xsessiond-sleep-flags", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sleep flags: memfd: %w", err)
	}
	p := &sleepPage{fd: fd}
	if err := unix.Ftruncate(fd, api.SleepFlagsSize); err != nil {
		p.close()
		return nil, fmt.Errorf("sleep flags: truncate: %w", err)
	}
	p.mem, err = unix.Mmap(fd, 0, api.SleepFlagsSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("sleep flags: mmap: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		p.close()
		return nil, fmt.Errorf("sleep flags: seal: %w", err)
	}
	for i := range api.MaxKickFDs {
		p.word(i).Store(1)
	}
	return p, nil
}

// word returns worker i's word (i < api.MaxKickFDs).
func (p *sleepPage) word(i int) *atomic.Uint32 { return api.SleepFlag(p.mem, i) }

// close unmaps and closes the page. The workers must be stopped.
func (p *sleepPage) close() {
	if p.mem != nil {
		_ = unix.Munmap(p.mem)
		p.mem = nil
	}
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// SleepFlagsFD returns the sleep flags page's memfd (api.SleepFlags), or
// -1 when the Engine has none (or is closed). The Engine owns it; it
// stays open until Close.
func (e *Engine) SleepFlagsFD() int {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.sleep == nil {
		return -1
	}
	return e.sleep.fd
}
