package nsbind

import (
	"encoding/binary"
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
	ch.cmd = unix.ETHTOOL_GCHANNELS
	if err := ethtool(name, unsafe.Pointer(ch)); err != nil {
		return fmt.Errorf("ethtool get channels of %s: %w", name, err)
	}
	return nil
}

// ethtool runs SIOCETHTOOL on interface name of the calling thread's
// namespace with data, a command structure of linux/ethtool.h.
func ethtool(name string, data unsafe.Pointer) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("ethtool: interface name %q too long: %w", name, ErrNoInterface)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(unsafe.Pointer(nil))]byte
	}
	copy(ifr.name[:], name)
	ifr.data = data
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}

// The features string set (ETH_SS_FEATURES) and a string's length
// (ETH_GSTRING_LEN) of linux/ethtool.h.
const (
	ethSSFeatures  = 4
	ethGStringLen  = 32
	maxFeatureBits = 1024
)

// stringSetLen returns how many strings string set ss of name has
// (ETHTOOL_GSSET_INFO).
func stringSetLen(name string, ss uint) (int, error) {
	var info struct {
		cmd, reserved uint32
		mask          uint64
		data          [1]uint32
	}
	info.cmd, info.mask = unix.ETHTOOL_GSSET_INFO, 1<<ss
	if err := ethtool(name, unsafe.Pointer(&info)); err != nil {
		return 0, featureError("string set", name, err)
	}
	if info.mask&(1<<ss) == 0 || info.data[0] > maxFeatureBits {
		return 0, featureError("string set", name, unix.EOPNOTSUPP)
	}
	return int(info.data[0]), nil
}

// getStrings returns the n strings of set ss of name (ETHTOOL_GSTRINGS),
// ethGStringLen bytes each.
func getStrings(name string, ss uint, n int) ([]byte, error) {
	buf := make([]byte, 12+n*ethGStringLen)
	binary.NativeEndian.PutUint32(buf[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(buf[4:], uint32(ss))
	binary.NativeEndian.PutUint32(buf[8:], uint32(n))
	if err := ethtool(name, unsafe.Pointer(&buf[0])); err != nil {
		return nil, featureError("strings", name, err)
	}
	if got := int(binary.NativeEndian.Uint32(buf[8:])); got < n {
		n = got
	}
	return buf[12 : 12+n*ethGStringLen], nil
}

// featureBlock is struct ethtool_get_features_block.
type featureBlock struct {
	available, requested, active, neverChanged uint32
}

// getFeatures returns name's features, blocks of 32 (ETHTOOL_GFEATURES).
func getFeatures(name string, blocks int) ([]featureBlock, error) {
	buf := make([]uint32, 2+4*blocks)
	buf[0], buf[1] = unix.ETHTOOL_GFEATURES, uint32(blocks)
	if err := ethtool(name, unsafe.Pointer(&buf[0])); err != nil {
		return nil, featureError("get features", name, err)
	}
	out := make([]featureBlock, blocks)
	for i := range out {
		b := buf[2+4*i:]
		out[i] = featureBlock{available: b[0], requested: b[1], active: b[2], neverChanged: b[3]}
	}
	return out, nil
}

// setFeatureBit asks for feature bit of name on or off, the others left
// as they are (ETHTOOL_SFEATURES).
func setFeatureBit(name string, blocks, bit int, on bool) error {
	buf := make([]uint32, 2+2*blocks)
	buf[0], buf[1] = unix.ETHTOOL_SFEATURES, uint32(blocks)
	buf[2+2*(bit/32)] = 1 << (bit % 32) // valid
	if on {
		buf[3+2*(bit/32)] = 1 << (bit % 32) // requested
	}
	if err := ethtool(name, unsafe.Pointer(&buf[0])); err != nil {
		return featureError("set features", name, err)
	}
	return nil
}
