package loader

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xsessiond/xsessiond/flow"
)

// DefaultFragmentTTL is how long the program follows a fragmented
// datagram's verdict unless ObjectsOptions.FragmentTTL says otherwise
// (XS_FRAG_TTL_NS in bpf/xsession.h): Linux's default reassembly timeout.
// An older entry counts as absent.
const DefaultFragmentTTL = 30 * time.Second

// FragmentGrace is how long an entry of ours lives on after the program
// saw its datagram's last fragment (XS_FRAG_GRACE_NS), when that is
// shorter than what is left of its TTL.
const FragmentGrace = 100 * time.Millisecond

// FragmentVerdict says where the fragments of a UDP datagram go.
type FragmentVerdict uint32

// Verdicts of the fragments map (XS_FRAG_* in bpf/xsession.h).
const (
	FragmentOurs   FragmentVerdict = 1 // redirected to the AF_XDP socket
	FragmentKernel FragmentVerdict = 2 // given to the kernel
)

func (v FragmentVerdict) String() string {
	switch v {
	case FragmentOurs:
		return "ours"
	case FragmentKernel:
		return "kernel"
	}
	return fmt.Sprintf("verdict(%d)", uint32(v))
}

// FragmentKey names one fragmented datagram as the receiving host sees it:
// Src is the packet's source. Addresses follow flow.FiveTuple (an IPv4
// address in the first 4 bytes); ID is the datagram's identification as a
// number (IPv4's 16 bits, IPv6's 32).
type FragmentKey struct {
	IfIndex  int
	Family   uint8
	Proto    flow.Transport
	Src, Dst [16]byte
	ID       uint32
}

func (k FragmentKey) raw() (xsessionXsFragKey, error) {
	if k.IfIndex <= 0 || uint64(k.IfIndex) > 1<<32-1 {
		return xsessionXsFragKey{}, fmt.Errorf("ifindex %d: %w", k.IfIndex, ErrInvalidKey)
	}
	if err := checkAddr(k.Family, &k.Src); err != nil {
		return xsessionXsFragKey{}, err
	}
	if err := checkAddr(k.Family, &k.Dst); err != nil {
		return xsessionXsFragKey{}, err
	}
	return xsessionXsFragKey{
		Src: k.Src, Dst: k.Dst, Id: k.ID, Ifindex: uint32(k.IfIndex),
		Family: k.Family, Proto: uint8(k.Proto),
	}, nil
}

func (k xsessionXsFragKey) key() FragmentKey {
	return FragmentKey{IfIndex: int(k.Ifindex), Family: k.Family, Proto: flow.Transport(k.Proto), Src: k.Src, Dst: k.Dst, ID: k.Id}
}

// Fragment is the program's record of a fragmented datagram: its verdict
// and when it was made, in nanoseconds of CLOCK_MONOTONIC
// (bpf_ktime_get_ns).
type Fragment struct {
	Verdict FragmentVerdict
	SeenNs  uint64
}

// Fresh reports whether the program still follows f at monotonic time now
// (nanoseconds) with a TTL of ttl: it was made less than ttl before.
func (f Fragment) Fresh(now uint64, ttl time.Duration) bool {
	return now-f.SeenNs < uint64(ttl)
}

// FragmentEntry is one entry of the fragments map.
type FragmentEntry struct {
	Key      FragmentKey
	Fragment Fragment
}

// FragmentMap is the program's fragments map: the verdicts on fragmented
// UDP datagrams, which the program writes. Safe for concurrent use.
type FragmentMap struct{ m *ebpf.Map }

// Lookup returns the record of the datagram k, or ErrNotFound.
func (f *FragmentMap) Lookup(k FragmentKey) (Fragment, error) {
	rk, err := k.raw()
	if err != nil {
		return Fragment{}, err
	}
	var v xsessionXsFragValue
	if err := f.m.Lookup(&rk, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Fragment{}, fmt.Errorf("lookup fragment: %w", ErrNotFound)
		}
		return Fragment{}, fmt.Errorf("lookup fragment: %w", err)
	}
	return Fragment{Verdict: FragmentVerdict(v.Verdict), SeenNs: v.SeenNs}, nil
}

// Entries returns every entry of the map.
func (f *FragmentMap) Entries() ([]FragmentEntry, error) {
	var out []FragmentEntry
	var k xsessionXsFragKey
	var v xsessionXsFragValue
	it := f.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, FragmentEntry{Key: k.key(), Fragment: Fragment{Verdict: FragmentVerdict(v.Verdict), SeenNs: v.SeenNs}})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("dump fragments: %w", err)
	}
	return out, nil
}
