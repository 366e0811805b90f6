package datapath

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWakeUpProtocol walks wakeUp against a worker's steps toward sleep
// (the loop's clearing of woke, announceSleep, the sleep flag): a wake-up
// while the worker is awake writes nothing but keeps it from sleeping; one
// after the worker set its flag writes the kick eventfd, once however many
// come before the worker looks again.
func TestWakeUpProtocol(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	kicks := func() uint64 {
		var b [8]byte
		if _, err := unix.Read(efd, b[:]); errors.Is(err, unix.EAGAIN) {
			return 0
		} else if err != nil {
			t.Fatal(err)
		}
		return uint64(b[0]) | uint64(b[1])<<8
	}
	w := &worker{e: &Engine{}, kick: efd}
	w.sleepWord = &w.ownWord

	// Awake (flag clear), past the top of its loop.
	w.woke.Store(false)
	w.wakeUp()
	if n := kicks(); n != 0 {
		t.Fatalf("a wake-up of an awake worker wrote %d to its eventfd", n)
	}
	if w.announceSleep() {
		t.Fatal("the worker would sleep after a wake-up it had not looked at")
	}
	if w.sleepWord.Load() != 0 {
		t.Fatal("a worker that stays awake left its sleep flag set")
	}

	// The next loop clears woke; nothing came: the worker may sleep.
	w.woke.Store(false)
	if !w.announceSleep() {
		t.Fatal("a worker with nothing to do may not sleep")
	}
	w.wakeUp()
	w.wakeUp()
	if n := kicks(); n != 1 {
		t.Fatalf("two wake-ups of a sleeping worker wrote %d, want 1", n)
	}

	// Woken, it clears its flag and woke; a later wake-up of a sleeper
	// writes again.
	w.sleepWord.Store(0)
	w.woke.Store(false)
	if !w.announceSleep() {
		t.Fatal("a worker with nothing to do may not sleep")
	}
	w.wakeUp()
	if n := kicks(); n != 1 {
		t.Fatalf("a wake-up of the sleeping worker wrote %d, want 1", n)
	}
}
