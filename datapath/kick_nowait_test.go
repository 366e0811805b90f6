package datapath

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An app can clear O_NONBLOCK on the kick eventfd it shares with the
// worker and read its count away: the worker's read must still return at
// once.
func TestReadNoWaitBlockingEventfd(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking, as the app can make it
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	done := make(chan error, 1)
	go func() {
		var b [8]byte
		_, err := readNoWait(fd, b[:])
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("read of an empty blocking eventfd: %v, want EAGAIN", err)
		}
	case <-time.After(2 * time.Second):
		unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // let the reader go
		t.Fatal("the read of an empty blocking eventfd blocked")
	}
	if _, err := unix.Write(fd, []byte{5, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	if n, err := readNoWait(fd, b[:]); n != 8 || err != nil || b[0] != 5 {
		t.Fatalf("read of a count: %d %v %v", n, err, b)
	}
}
