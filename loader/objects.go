package loader

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// ProgramName is the kernel name of xsessiond's XDP program. The loader uses
// it to recognise an attachment left behind by an earlier run.
const ProgramName = "xsession_xdp"

// Default map sizes.
const (
	DefaultQueues         = 64
	DefaultMaxListeners   = 4096
	DefaultMaxEstablished = 65536
	DefaultMaxFragments   = 8192
)

// Spec is the parsed XDP program and its maps, not yet in the kernel.
// Parsing touches nothing in the kernel. A Spec is safe for concurrent use;
// Load does not change it.
type Spec struct {
	cs *ebpf.CollectionSpec
}

// LoadSpec parses the embedded, generated object.
func LoadSpec() (*Spec, error) {
	cs, err := loadXsession()
	if err != nil {
		return nil, fmt.Errorf("parse xdp object: %w", err)
	}
	for _, name := range []string{xsessionMapCounters, xsessionMapEstablished, xsessionMapListeners, xsessionMapXsks, xsessionMapPorts, xsessionMapFragments} {
		if cs.Maps[name] == nil {
			return nil, fmt.Errorf("parse xdp object: map %q missing", name)
		}
	}
	if cs.Programs[xsessionProgXsessionXdp] == nil {
		return nil, fmt.Errorf("parse xdp object: program %q missing", xsessionProgXsessionXdp)
	}
	return &Spec{cs: cs}, nil
}

// ObjectsOptions size the program's maps. Zero fields take the defaults.
type ObjectsOptions struct {
	// Queues is the number of slots of the xsks map: the highest rx queue
	// index that can be steered, plus one.
	Queues int
	// MaxListeners and MaxEstablished bound the listener and established
	// maps (hash maps, preallocated).
	MaxListeners   int
	MaxEstablished int
	// MaxFragments bounds the fragments map (an LRU hash map): the UDP
	// datagrams whose fragments the program tracks at once. When it is
	// full, the least recently used datagram is forgotten.
	MaxFragments int
	// FragmentTTL is how long the program follows a fragmented
	// datagram's verdict: the reassembly timeout of whoever reassembles
	// it, the longer of the two families' (DefaultFragmentTTL, Linux's
	// IPv4 default, when zero).
	FragmentTTL time.Duration
	// MAC is the interface's hardware address: a unicast frame to another
	// is passed to the kernel unlooked at (Counters.OtherHost). Empty: no
	// frame is passed for its MAC. Objects.SetMAC changes it.
	MAC net.HardwareAddr
	// CheckLocal makes the program steer a packet to a wildcard
	// listener's port only when its destination is in the locals map
	// (Objects.Locals), the namespace's addresses; others go to the
	// kernel (Counters.NotLocal). Off, every destination is taken.
	CheckLocal bool
}

func (o *ObjectsOptions) withDefaults() error {
	if o.Queues == 0 {
		o.Queues = DefaultQueues
	}
	if o.MaxListeners == 0 {
		o.MaxListeners = DefaultMaxListeners
	}
	if o.MaxEstablished == 0 {
		o.MaxEstablished = DefaultMaxEstablished
	}
	if o.MaxFragments == 0 {
		o.MaxFragments = DefaultMaxFragments
	}
	if o.FragmentTTL == 0 {
		o.FragmentTTL = DefaultFragmentTTL
	}
	if o.FragmentTTL < 0 {
		return fmt.Errorf("fragment TTL %v: %w", o.FragmentTTL, ErrInvalidOptions)
	}
	const limit = 1 << 24
	for _, v := range []int{o.Queues, o.MaxListeners, o.MaxEstablished, o.MaxFragments} {
		if v < 0 || v > limit {
			return fmt.Errorf("map size %d: %w", v, ErrInvalidOptions)
		}
	}
	return nil
}

// Objects are the program and its maps, loaded into the kernel but not
// attached. Close releases them (and detaches an attachment made from
// them). The typed maps are safe for concurrent use; Attach and Close are
// serialised by a lock.
type Objects struct {
	Listeners   *ListenerMap
	Established *EstablishedMap
	XSKs        *XSKMap
	Counters    *CounterMap
	Fragments   *FragmentMap
	Locals      *LocalMap

	objs xsessionObjects

	mu     sync.Mutex  // guards att and closed
	att    *Attachment // the attachment made from these objects, if any
	closed bool
}

// Load creates the maps and loads the program into the kernel.
func (s *Spec) Load(opts ObjectsOptions) (*Objects, error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	cs := s.cs.Copy()
	cs.Maps[xsessionMapXsks].MaxEntries = uint32(opts.Queues)
	cs.Maps[xsessionMapListeners].MaxEntries = uint32(opts.MaxListeners)
	cs.Maps[xsessionMapEstablished].MaxEntries = uint32(opts.MaxEstablished)
	cs.Maps[xsessionMapFragments].MaxEntries = uint32(opts.MaxFragments)
	if err := cs.Variables[xsessionVarXsFragTtlNs].Set(uint64(opts.FragmentTTL)); err != nil {
		return nil, fmt.Errorf("load xdp program: fragment TTL: %w", err)
	}
	var mac [6]byte
	if len(opts.MAC) == len(mac) {
		mac = [6]byte(opts.MAC)
	} else if len(opts.MAC) != 0 {
		return nil, fmt.Errorf("load xdp program: MAC %v: want 6 bytes", opts.MAC)
	}
	if err := cs.Variables[xsessionVarXsMac].Set(mac); err != nil {
		return nil, fmt.Errorf("load xdp program: MAC: %w", err)
	}
	var check uint8
	if opts.CheckLocal {
		check = 1
	}
	if err := cs.Variables[xsessionVarXsCheckLocal].Set(check); err != nil {
		return nil, fmt.Errorf("load xdp program: local check: %w", err)
	}
	o := &Objects{}
	if err := cs.LoadAndAssign(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load xdp program: %+v", ve)
		}
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	ports := newPortIndex(o.objs.Ports)
	o.Listeners = &ListenerMap{m: o.objs.Listeners, ports: ports}
	o.Established = &EstablishedMap{m: o.objs.Established, ports: ports}
	o.XSKs = &XSKMap{m: o.objs.Xsks}
	o.Counters = &CounterMap{m: o.objs.Counters}
	o.Fragments = &FragmentMap{m: o.objs.Fragments}
	o.Locals = &LocalMap{m: o.objs.Locals}
	return o, nil
}

// SetMAC tells the loaded program the interface's hardware address anew
// (ObjectsOptions.MAC), when it changed: frames to it are looked at from
// then on, frames to the old one pass to the kernel. The program reads it
// byte by byte, so a frame that arrives during the write may be passed to
// the kernel as another host's.
func (o *Objects) SetMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("set MAC %v: want 6 bytes", mac)
	}
	m := [6]byte(mac)
	if err := o.objs.XsMac.Set(m); err != nil {
		return fmt.Errorf("set MAC %v: %w", mac, err)
	}
	return nil
}

// Program returns the XDP program. It stays owned by o.
func (o *Objects) Program() *ebpf.Program { return o.objs.XsessionXdp }

// Attachment returns the attachment made from o, or nil.
func (o *Objects) Attachment() *Attachment {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.att
}

// Close detaches and unpins o's attachment, if any, and releases the
// program and maps. It is safe to call more than once.
func (o *Objects) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var errs []error
	if o.att != nil {
		errs = append(errs, o.att.closeLocked())
	}
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}
