package main

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Socketpair is the cut-through baseline: two local apps joined by a unix
// SOCK_SEQPACKET socketpair, one goroutine writing payload-sized messages
// flat out, one reading them.
type Socketpair struct {
	fds       [2]int
	stop      atomic.Bool
	wg        sync.WaitGroup
	sent      atomic.Uint64
	delivered atomic.Uint64
}

// NewSocketpair returns the socketpair baseline.
func NewSocketpair() *Socketpair { return &Socketpair{fds: [2]int{-1, -1}} }

func (s *Socketpair) Name() string      { return ImplSocketpair }
func (s *Socketpair) Sent() uint64      { return s.sent.Load() }
func (s *Socketpair) Delivered() uint64 { return s.delivered.Load() }

// Start opens the pair and starts the writer and the reader.
func (s *Socketpair) Start(payload int) error {
	if payload < 1 {
		return fmt.Errorf("socketpair: payload %d", payload)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	s.fds = fds
	s.wg.Add(2)
	go func() { // writer
		defer s.wg.Done()
		buf := make([]byte, payload)
		for !s.stop.Load() {
			if _, err := unix.Write(fds[0], buf); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				break
			}
			s.sent.Add(1)
		}
		_ = unix.Shutdown(fds[0], unix.SHUT_WR) // the reader sees end of stream
	}()
	go func() { // reader
		defer s.wg.Done()
		buf := make([]byte, payload+1)
		for {
			n, err := unix.Read(fds[1], buf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n == 0 {
				return
			}
			s.delivered.Add(1)
		}
	}()
	return nil
}

// Stop ends the writer, lets the reader drain, and closes the pair.
func (s *Socketpair) Stop() error {
	if s.fds[0] < 0 {
		return nil
	}
	s.stop.Store(true)
	s.wg.Wait()
	err := errors.Join(unix.Close(s.fds[0]), unix.Close(s.fds[1]))
	s.fds = [2]int{-1, -1}
	return err
}
