package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/reasm"
	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// DefaultSocket is where the daemon listens for apps and the CLI.
const DefaultSocket = daemon.DefaultSocket

// Config is the daemon's configuration file (YAML). Flags override it.
type Config struct {
	Socket      string `yaml:"socket"`
	SocketGroup string `yaml:"socket_group"`
	MetricsAddr string `yaml:"metrics_addr"`
	LogLevel    string `yaml:"log_level"`
	// SchedPolicy is the scheduling policy of the daemon's threads: keep
	// (the default) or batch (SCHED_BATCH; daemon.SetSchedPolicy).
	SchedPolicy string                   `yaml:"sched_policy"`
	Interfaces  []InterfaceConfig        `yaml:"interfaces"`
	Namespaces  []daemon.NamespaceConfig `yaml:"namespaces"`
	Rules       []daemon.RuleConfig      `yaml:"rules"`
	// Control bounds what the control socket gives each client (send
	// and idle timeouts, queue bounds, connection cap); zero fields take
	// the defaults documented in deploy/xsessiond.yaml.
	Control daemon.ControlLimits `yaml:"control"`
	// Limits bound the apps and their memory; Authorization says who may
	// send admin requests. See deploy/xsessiond.yaml.
	Limits        daemon.Limits `yaml:"limits"`
	Authorization daemon.Auth   `yaml:"authorization"`
	// TCP shapes the TCP of the datapath (zero fields: the defaults).
	TCP TCPConfig `yaml:"tcp"`
}

// TCPConfig is the tcp section of the config file.
type TCPConfig struct {
	// ConnectTimeout bounds an app's connect to a peer on the wire: it
	// fails with ETIMEDOUT after it (0: 30s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// CloseTimeout bounds a graceful close: an app's Disconnect whose tx
	// fifo does not drain into a peer that keeps its window shut, and a
	// closed connection whose peer acknowledges nothing of what gVisor
	// still holds (an orphan), are reset after it (0: 60s).
	CloseTimeout time.Duration `yaml:"close_timeout"`
	// NoGSO sends TCP one frame per segment through the AF_XDP tx rings,
	// checksums in software, instead of segments of up to 64 KiB
	// through a packet socket that lets the kernel cut and checksum
	// them (datapath.TCPConfig.NoGSO).
	NoGSO bool `yaml:"no_gso"`
	// AckDelay is how long a bare acknowledgement of one segment may wait
	// for the connection's next segment (the reply) to carry it, as
	// Linux's delayed acknowledgement does (tcp.Options.AckDelay). Unset:
	// the default (1ms); 0s: every acknowledgement goes at once.
	AckDelay *time.Duration `yaml:"ack_delay"`
	// BufferMemory bounds the gVisor send and receive buffers of all TCP
	// connections together, in bytes (tcp.Options.BufferBytes; 0: an
	// eighth of the machine's memory, at least 256 MiB), UserBufferMemory
	// those of the connections of one user's apps, or of one app of
	// root's (0: an eighth of BufferMemory). A connection past its user's
	// bound gets 64 KiB buffers until the user's hold twice the bound; one
	// past that, or past BufferMemory, is refused.
	BufferMemory     int64 `yaml:"buffer_memory"`
	UserBufferMemory int64 `yaml:"user_buffer_memory"`
	// MaxTimeWait bounds the connections held after their close while
	// TCP finishes them (TIME-WAIT and the other closing states); past it
	// the oldest is ended early, as Linux's tcp_max_tw_buckets does
	// (datapath.TCPConfig.MaxTimeWait; 0: 16384).
	MaxTimeWait int `yaml:"max_time_wait"`
	// SynRate paces the SYNs each worker hands to gVisor once more than
	// 256 wait in its queue, as in a SYN flood: at most this many a
	// second (datapath.TCPConfig.SynRate; 0: 10000; -1: never paced).
	SynRate int `yaml:"syn_rate"`
}

// maxAckDelay bounds tcp.ack_delay: Linux's longest delay (TCP_DELACK_MAX).
const maxAckDelay = 200 * time.Millisecond

// InterfaceConfig is one interface the daemon runs workers on.
type InterfaceConfig struct {
	Name   string `yaml:"name"`
	Netns  string `yaml:"netns"`  // named network namespace the interface lives in; "" = the daemon's
	Queues int    `yaml:"queues"` // 0 = every rx queue of the interface
	// CPUs lists the CPUs the workers run on, worker q on the q-th
	// ("2-5,8", datapath.ParseCPUList); "" = the scheduler places them.
	CPUs     string `yaml:"cpus"`
	XDPMode  string `yaml:"xdp_mode"`  // auto, native or generic
	Batch    int    `yaml:"batch"`     // frames per poll; 0 = 64
	BusyPoll bool   `yaml:"busy_poll"` // spin instead of sleeping in poll() when idle
	// Checksum: what to make of a UDP checksum field holding the
	// pseudo-header sum (a local sender's checksum offload): auto (accept
	// it on veth, netkit and tun, verify elsewhere), verify or
	// accept-partial.
	Checksum string `yaml:"checksum"`
	// Reassembly bounds each worker's reassembly of UDP fragments.
	Reassembly ReassemblyConfig `yaml:"reassembly"`
	// IdleSpin is how long a worker spins after it delivered or sent an
	// app's datagrams before it sleeps in poll(); IdleSpinMax is how long
	// the spin may grow to cover a steady sender's gaps
	// (datapath.Config.IdleSpin, IdleSpinMax). Unset: the defaults (120µs,
	// 2ms); 0s: never spin, never grow.
	IdleSpin    *time.Duration `yaml:"idle_spin"`
	IdleSpinMax *time.Duration `yaml:"idle_spin_max"`
}

// maxIdleSpin bounds idle_spin and idle_spin_max.
const maxIdleSpin = time.Second

// offSetting is the engine's value of a duration setting whose 0s means
// off (idle_spin, idle_spin_max, tcp.ack_delay): unset 0 (the default),
// 0s negative (off).
func offSetting(d *time.Duration) time.Duration {
	switch {
	case d == nil:
		return 0
	case *d == 0:
		return -1
	}
	return *d
}

// ReassemblyConfig is an interface's reassembly section: the bounds of
// each of its workers' reassembly of UDP fragments (datapath/reasm; 0:
// the default).
type ReassemblyConfig struct {
	MaxDatagrams int           `yaml:"max_datagrams"` // datagrams in flight per worker, each in a 64 KiB buffer (0: 64); a new one evicts the oldest
	MaxFragments int           `yaml:"max_fragments"` // fragments of one datagram (0: 128)
	Timeout      time.Duration `yaml:"timeout"`       // how long a datagram's fragments may take, both families (0: the kernel's net.ipv4.ipfrag_time and net.ipv6.ip6frag_time, 30s and 60s by default)
}

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("config %s: %w: give --config a YAML file (deploy/xsessiond.yaml is a sample)", path, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// ParseConfig parses and validates a configuration. Unknown keys are errors,
// so a typo does not silently fall back to a default.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		if bytes.HasPrefix(b, []byte("\t")) || bytes.Contains(b, []byte("\n\t")) {
			return nil, fmt.Errorf("%w; YAML indents with spaces, and a line of this file starts with a tab", configError(err))
		}
		return nil, configError(err)
	}
	// One document: what follows a "---" would be dropped unread.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New(`config: more than one YAML document (a line "---" after the first): put everything in one`)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err == nil {
		if err := fractions(&doc, reflect.TypeFor[Config]()); err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := secretsGiven(b); err != nil {
		return nil, err
	}
	return &c, nil
}

// secretsGiven refuses a namespace without a secret key: it would take
// secret 0, which an app that gives none attaches with.
func secretsGiven(b []byte) error {
	var keys struct {
		Namespaces []struct {
			ID     string     `yaml:"id"`
			Secret *yaml.Node `yaml:"secret"`
		} `yaml:"namespaces"`
	}
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return nil // Decode above said what is wrong, if anything
	}
	for _, n := range keys.Namespaces {
		if n.Secret == nil {
			return fmt.Errorf("config: namespace %q: no secret: give it one, a random 64-bit number (od -An -N8 -tu8 /dev/urandom), which its apps attach with", n.ID)
		}
	}
	return nil
}

// sampleSecret is the secret of deploy/xsessiond.yaml's namespace, known
// to everyone who read the sample.
const sampleSecret = 6154215623496243451

// exposure lists what makes the namespaces' secrets of c, read from the
// file path, known to others: a file other users may read, a namespace
// with the sample's secret.
func (c *Config) exposure(path string) []string {
	if len(c.Namespaces) == 0 {
		return nil
	}
	var out []string
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		out = append(out, fmt.Sprintf("%s holds the namespaces' secrets and every user may read it (mode %v): chmod 600 %s", path, fi.Mode().Perm(), path))
	}
	for _, n := range c.Namespaces {
		if n.Secret == sampleSecret {
			out = append(out, fmt.Sprintf("namespace %q has the sample config's published secret: give it your own (od -An -N8 -tu8 /dev/urandom)", n.ID))
		}
	}
	return out
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if err := daemon.CheckSchedPolicy(c.SchedPolicy); err != nil {
		return fmt.Errorf("config: sched_policy: %w", err)
	}
	seen := map[string]bool{}
	for i := range c.Interfaces {
		ic := &c.Interfaces[i]
		if ic.Name == "" {
			return fmt.Errorf("config: interfaces[%d]: name is empty", i)
		}
		key := ic.Netns + "/" + ic.Name
		if seen[key] {
			return fmt.Errorf("config: interface %s listed twice", ic.Name)
		}
		seen[key] = true
		switch ic.XDPMode {
		case "", "auto", "native", "generic":
		default:
			return fmt.Errorf("config: interface %s: xdp_mode %q: want auto, native or generic", ic.Name, ic.XDPMode)
		}
		if _, err := datapath.ParseChecksum(ic.Checksum); err != nil {
			return fmt.Errorf("config: interface %s: checksum %q: want auto, verify or accept-partial", ic.Name, ic.Checksum)
		}
		if ic.CPUs != "" {
			if _, err := datapath.ParseCPUList(ic.CPUs); err != nil {
				return fmt.Errorf("config: interface %s: %s", ic.Name, strings.TrimSuffix(err.Error(), ": "+datapath.ErrInvalidConfig.Error()))
			}
		}
		if ic.Queues < 0 || ic.Batch < 0 || ic.Batch > 1024 {
			return fmt.Errorf("config: interface %s: queues must be ≥ 0 and batch in 0..1024", ic.Name)
		}
		if r := ic.Reassembly; r.MaxDatagrams < 0 || r.MaxDatagrams > 4096 || r.MaxFragments < 0 || r.MaxFragments > 1024 || r.Timeout < 0 || r.Timeout > reasm.MaxTimeout {
			return fmt.Errorf("config: interface %s: reassembly: max_datagrams in 0..4096, max_fragments in 0..1024 and timeout in 0..24h (0: the kernel's)", ic.Name)
		}
		for _, d := range []*time.Duration{ic.IdleSpin, ic.IdleSpinMax} {
			if d != nil && (*d < 0 || *d > maxIdleSpin) {
				return fmt.Errorf("config: interface %s: idle_spin and idle_spin_max must be in 0s..%v (0s: off; unset: the default)", ic.Name, maxIdleSpin)
			}
		}
	}
	if c.TCP.ConnectTimeout < 0 || c.TCP.CloseTimeout < 0 {
		return errors.New("config: tcp: connect_timeout and close_timeout must be ≥ 0 (0: default)")
	}
	if c.TCP.MaxTimeWait < 0 {
		return errors.New("config: tcp: max_time_wait must be ≥ 0 (0: default)")
	}
	if c.TCP.SynRate < -1 {
		return errors.New("config: tcp: syn_rate must be ≥ 0 (0: default), or -1 for no pace")
	}
	if c.TCP.BufferMemory < 0 || c.TCP.UserBufferMemory < 0 {
		return errors.New("config: tcp: buffer_memory and user_buffer_memory must be ≥ 0 (0: default)")
	}
	if b, u := c.TCP.BufferMemory, c.TCP.UserBufferMemory; b > 0 && u > b {
		return fmt.Errorf("config: tcp: user_buffer_memory (%d) is more than buffer_memory (%d)", u, b)
	}
	if d := c.TCP.AckDelay; d != nil && (*d < 0 || *d > maxAckDelay) {
		return fmt.Errorf("config: tcp: ack_delay must be in 0s..%v (0s: off; unset: the default, %v)", maxAckDelay, tcp.DefaultAckDelay)
	}
	cl := c.Control
	if cl.SendTimeout < 0 || cl.HelloTimeout < 0 || cl.QueueLen < 0 || cl.QueueBytes < 0 {
		return errors.New("config: control: send_timeout, hello_timeout, queue_len and queue_bytes must be ≥ 0 (0: default)")
	}
	if err := c.Authorization.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if r := c.Limits.SecretFailuresPerSecond; math.IsNaN(r) || math.IsInf(r, 0) {
		return errors.New("config: limits: secret_failures_per_second must be a finite number (0: default)")
	}
	if c.Limits.SecretFailuresPerSecond < 0 || c.Limits.SecretFailureBurst < 0 {
		return errors.New("config: limits: secret_failures_per_second and secret_failure_burst must be ≥ 0 (0: default)")
	}
	ids := map[string]bool{}
	for i, n := range c.Namespaces {
		if n.ID == "" {
			return fmt.Errorf("config: namespaces[%d]: id is empty (the default namespace is built in)", i)
		}
		if n.ID == daemon.DefaultNamespace {
			return fmt.Errorf("config: namespaces[%d]: %q is the built-in namespace apps attach to with no secret: give yours another id", i, n.ID)
		}
		if why := namespaceIDProblem(n.ID); why != "" {
			return fmt.Errorf("config: namespaces[%d]: %s", i, why)
		}
		if ids[n.ID] {
			return fmt.Errorf("config: namespace %q listed twice", n.ID)
		}
		ids[n.ID] = true
		if n.Iface == "" {
			return fmt.Errorf("config: namespace %q: iface is empty", n.ID)
		}
	}
	for i, r := range c.Rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("config: rules[%d]: %w", i, err)
		}
	}
	return nil
}
