package nsbind

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Driver returns the name of the driver of the interface called name, as
// ETHTOOL_GDRVINFO reports it ("veth", "virtio_net", "mlx5_core", ...).
func (n *Namespace) Driver(name string) (string, error) {
	if len(name) >= unix.IFNAMSIZ {
		return "", fmt.Errorf("driver of %q: interface name too long: %w", name, ErrNoInterface)
	}
	var drv string
	err := n.in("driver of "+strconv.Quote(name)+" in "+n.desc, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("ethtool socket: %w", err)
		}
		defer unix.Close(fd)
		info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
		if err != nil {
			return fmt.Errorf("ethtool get driver info of %s: %w", name, err)
		}
		drv = unix.ByteSliceToString(info.Driver[:])
		return nil
	})
	return drv, err
}
