package xsktest

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool commands that set one feature group each.
const (
	ethtoolSTXCSUM = 0x17 // tx checksum offload (all checksum features)
	ethtoolSTSO    = 0x1f // TCP segmentation offload (all TSO features)
)

// setFeature switches a feature group of the named interface of the calling
// thread's network namespace with a legacy ethtool set command.
func setFeature(ifname string, cmd uint32, on bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	val := struct{ Cmd, Data uint32 }{Cmd: cmd}
	if on {
		val.Data = 1
	}
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("ethtool: interface name %q too long", ifname)
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(unsafe.Pointer(nil))]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("ethtool command %#x (%v) on %s: %w", cmd, on, ifname, e)
	}
	return nil
}
