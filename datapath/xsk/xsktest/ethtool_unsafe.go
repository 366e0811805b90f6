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
	ethtoolGGRO    = 0x2b // generic receive offload, read
	ethtoolSGRO    = 0x2c // generic receive offload, set
)

// setFeature switches a feature group of the named interface of the calling
// thread's network namespace with a legacy ethtool set command.
func setFeature(ifname string, cmd uint32, on bool) error {
	var data uint32
	if on {
		data = 1
	}
	_, err := featureIoctl(ifname, cmd, data)
	return err
}

// getFeature reads a feature group of the named interface with a legacy
// ethtool get command.
func getFeature(ifname string, cmd uint32) (bool, error) {
	v, err := featureIoctl(ifname, cmd, 0)
	return v != 0, err
}

// featureIoctl runs one legacy ethtool value command (struct ethtool_value)
// and returns the value the kernel left in it.
func featureIoctl(ifname string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	val := struct{ Cmd, Data uint32 }{Cmd: cmd, Data: data}
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("ethtool: interface name %q too long", ifname)
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(unsafe.Pointer(nil))]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return 0, fmt.Errorf("ethtool command %#x (%d) on %s: %w", cmd, data, ifname, e)
	}
	return val.Data, nil
}
