package datapath_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath"
)

// TestSocketDefaults checks what the Engine sets on its AF_XDP sockets by
// default: the ring sizes and the busy-poll options, each read back from
// the kernel. An option getsockopt does not know is logged and skipped:
// Linux 6.18 sets SO_BUSY_POLL_BUDGET but does not read it back.
func TestSocketDefaults(t *testing.T) {
	r := newEngineRig(t, 2, 1500)
	if o := datapath.SocketOptions(r.eng); o.RingSize != datapath.DefaultRingSize || o.NumFrames != datapath.DefaultNumFrames {
		t.Errorf("ring %d frames %d, want %d and %d", o.RingSize, o.NumFrames, datapath.DefaultRingSize, datapath.DefaultNumFrames)
	}
	fds := datapath.SocketFDs(r.eng)
	if len(fds) != 2 {
		t.Fatalf("%d sockets for 2 queues", len(fds))
	}
	for q, fd := range fds {
		for _, o := range []struct {
			name      string
			opt, want int
		}{
			{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
			{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, 64},
			{"SO_BUSY_POLL", unix.SO_BUSY_POLL, 20},
		} {
			v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
			if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) {
				t.Logf("queue %d: %s cannot be read back: %v", q, o.name, err)
				continue
			}
			if err != nil || v != o.want {
				t.Errorf("queue %d: %s = %d (%v), want %d", q, o.name, v, err, o.want)
			}
		}
	}
}
