package loader

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testXSK is a minimal AF_XDP socket for tests: a umem, a fill ring and an
// rx ring (plus the completion ring bind requires), in copy mode. It only
// receives and counts frames.
type testXSK struct {
	fd     int
	umem   []byte
	fillMM []byte
	rxMM   []byte

	fillProd, fillCons *uint32
	fillDesc           []uint64
	rxProd, rxCons     *uint32
	rxDesc             []unix.XDPDesc
	n                  uint32 // ring sizes and frame count
}

const testFrameSize = 2048

func sockopt(fd, name int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(name), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// newTestXSK creates an AF_XDP socket bound to (ifindex, queue) of the
// calling thread's network namespace. frames must be a power of two.
func newTestXSK(ifindex, queue int, frames uint32) (x *testXSK, err error) {
	x = &testXSK{fd: -1, n: frames}
	defer func() {
		if err != nil {
			x.Close()
		}
	}()
	x.fd, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket(AF_XDP): %w", err)
	}
	x.umem, err = unix.Mmap(-1, 0, int(frames)*testFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap umem: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: testFrameSize}
	if err := sockopt(x.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(x.fd, unix.SOL_XDP, opt, int(frames)); err != nil {
			return nil, fmt.Errorf("ring size option %d: %w", opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(x.fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
		return nil, fmt.Errorf("XDP_MMAP_OFFSETS: %w", e)
	}
	x.fillMM, err = unix.Mmap(x.fd, unix.XDP_UMEM_PGOFF_FILL_RING, int(off.Fr.Desc)+int(frames)*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap fill ring: %w", err)
	}
	x.rxMM, err = unix.Mmap(x.fd, unix.XDP_PGOFF_RX_RING, int(off.Rx.Desc)+int(frames)*int(unsafe.Sizeof(unix.XDPDesc{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap rx ring: %w", err)
	}
	x.fillProd = (*uint32)(unsafe.Pointer(&x.fillMM[off.Fr.Producer]))
	x.fillCons = (*uint32)(unsafe.Pointer(&x.fillMM[off.Fr.Consumer]))
	x.fillDesc = unsafe.Slice((*uint64)(unsafe.Pointer(&x.fillMM[off.Fr.Desc])), frames)
	x.rxProd = (*uint32)(unsafe.Pointer(&x.rxMM[off.Rx.Producer]))
	x.rxCons = (*uint32)(unsafe.Pointer(&x.rxMM[off.Rx.Consumer]))
	x.rxDesc = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&x.rxMM[off.Rx.Desc])), frames)

	// Hand every frame to the kernel.
	for i := uint32(0); i < frames; i++ {
		x.fillDesc[i] = uint64(i) * testFrameSize
	}
	atomic.StoreUint32(x.fillProd, frames)

	if ifindex > 0 {
		if err := unix.Bind(x.fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
			return nil, fmt.Errorf("bind AF_XDP to ifindex %d queue %d: %w", ifindex, queue, err)
		}
	}
	return x, nil
}

// FD returns the socket.
func (x *testXSK) FD() int { return x.fd }

// Receive waits up to timeout for frames and returns copies of those that
// arrived (possibly none), giving their buffers back to the fill ring.
func (x *testXSK) Receive(timeout time.Duration) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		prod := atomic.LoadUint32(x.rxProd)
		cons := atomic.LoadUint32(x.rxCons)
		if prod != cons {
			var out [][]byte
			fp := atomic.LoadUint32(x.fillProd)
			for ; cons != prod; cons++ {
				d := x.rxDesc[cons&(x.n-1)]
				if d.Addr+uint64(d.Len) > uint64(len(x.umem)) {
					return out, fmt.Errorf("rx descriptor %+v beyond umem", d)
				}
				out = append(out, append([]byte(nil), x.umem[d.Addr:d.Addr+uint64(d.Len)]...))
				x.fillDesc[fp&(x.n-1)] = d.Addr &^ (testFrameSize - 1)
				fp++
			}
			atomic.StoreUint32(x.rxCons, cons)
			atomic.StoreUint32(x.fillProd, fp)
			return out, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		ms := int(left / time.Millisecond)
		if ms == 0 {
			ms = 1
		}
		fds := []unix.PollFd{{Fd: int32(x.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("poll: %w", err)
		}
	}
}

// Close releases the socket and its memory.
func (x *testXSK) Close() error {
	for _, m := range [][]byte{x.rxMM, x.fillMM, x.umem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	x.rxMM, x.fillMM, x.umem = nil, nil, nil
	if x.fd >= 0 {
		unix.Close(x.fd)
		x.fd = -1
	}
	return nil
}
