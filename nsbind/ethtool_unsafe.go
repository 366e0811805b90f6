package nsbind

import (
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolChannels is struct ethtool_channels of linux/ethtool.h.
type ethtoolChannels struct {
	cmd                                         uint32
	maxRx, maxTx, maxOther, maxCombined         uint32
	rxCount, txCount, otherCount, combinedCount uint32
}

// ActiveRxQueues returns how many rx queues of the interface called name
// are in use, as ETHTOOL_GCHANNELS reports them (rx-only plus combined
// channels). This is the number of queues an AF_XDP socket can bind to; the
// IFLA_NUM_RX_QUEUES of Interface.RxQueues may be larger (a veth made
// without a queue count allocates one per CPU but uses one). A driver that
// does not report channels falls back to Interface.RxQueues.
func (n *Namespace) ActiveRxQueues(name string) (int, error) {
	verb := "rx queues of " + strconv.Quote(name) + " in " + n.desc
	ifc, err := n.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	var ch ethtoolChannels
	err = n.in(verb, func() error { return getChannels(name, &ch) })
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return ifc.RxQueues, nil
	case err != nil:
		return 0, err
	}
	q := int(ch.rxCount + ch.combinedCount)
	if q < 1 || (ifc.RxQueues > 0 && q > ifc.RxQueues) {
		return ifc.RxQueues, nil
	}
	return q, nil
}

func getChannels(name string, ch *ethtoolChannels) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("ethtool: interface name %q too long: %w", name, ErrNoInterface)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	ch.cmd = unix.ETHTOOL_GCHANNELS
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(unsafe.Pointer(nil))]byte
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(ch)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("ethtool get channels of %s: %w", name, e)
	}
	return nil
}
