package daemon

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/sessions"
)

// Limits bound what apps may take. Zero fields take the defaults below; a
// negative count turns a bound off. uid 0 is bound by MaxApps and the two
// cut-through bounds only (and by the wrong secrets' rate, which is not
// one of these).
type Limits struct {
	// MaxApps bounds the attached apps (DefaultMaxApps).
	MaxApps int `yaml:"max_apps"`
	// MaxAppsPerUID bounds the apps of one uid (DefaultMaxAppsPerUID).
	MaxAppsPerUID int `yaml:"max_apps_per_uid"`
	// SegmentMemoryPerUID bounds the segment memory the apps of one uid
	// may hold, in bytes (DefaultSegmentMemoryPerUID). Each app reserves
	// what it may grow to (its MaxFifoMemory, AppSegmentMemory when it
	// asks for none or more) when it attaches.
	SegmentMemoryPerUID uint64 `yaml:"segment_memory_per_uid"`
	// AppSegmentMemory is what an app of a uid other than 0 may hold when
	// it asks for no bound (DefaultAppSegmentMemory).
	AppSegmentMemory uint64 `yaml:"app_segment_memory"`
	// SecretFailuresPerSecond and SecretFailureBurst rate-limit wrong
	// namespace secrets per peer uid (1 a second after a burst of 5):
	// past them, attaches to a namespace with a secret are refused
	// unchecked until tokens come back.
	SecretFailuresPerSecond float64 `yaml:"secret_failures_per_second"`
	SecretFailureBurst      int     `yaml:"secret_failure_burst"`
	// MaxCutThrough bounds the cut-through sessions of the daemon
	// (sessions.DefaultMaxCutThrough), MaxCutThroughPerApp those one app
	// opened (sessions.DefaultMaxCutThroughPerApp): each is a segment of
	// its own, a descriptor and a mapping in the daemon and in both apps.
	// A connect past either fails with ErrLimit.
	MaxCutThrough       int `yaml:"max_cut_through"`
	MaxCutThroughPerApp int `yaml:"max_cut_through_per_app"`
	// MaxPortsPerUID bounds the ports of the host's stack the apps of one
	// uid other than 0 hold together: their global listeners and their
	// connects to the wire, with the ports their closed TCP connections
	// keep while they drain and in TIME-WAIT (sessions.
	// DefaultMaxPortsPerOwner; negative: no bound). A bind or connect past
	// it fails with ErrLimit: one user's apps cannot take every ephemeral
	// port of the host.
	MaxPortsPerUID int `yaml:"max_ports_per_uid"`
}

// Defaults of Limits.
const (
	DefaultMaxApps             = 1024
	DefaultMaxAppsPerUID       = 64
	DefaultSegmentMemoryPerUID = 1 << 30
	DefaultAppSegmentMemory    = 256 << 20
	DefaultSecretFailureRate   = 1.0
	DefaultSecretFailureBurst  = 5
)

func (l Limits) withDefaults() Limits {
	if l.MaxApps == 0 {
		l.MaxApps = DefaultMaxApps
	}
	if l.MaxAppsPerUID == 0 {
		l.MaxAppsPerUID = DefaultMaxAppsPerUID
	}
	if l.SegmentMemoryPerUID == 0 {
		l.SegmentMemoryPerUID = DefaultSegmentMemoryPerUID
	}
	if l.AppSegmentMemory == 0 {
		l.AppSegmentMemory = DefaultAppSegmentMemory
	}
	if l.SecretFailuresPerSecond <= 0 {
		l.SecretFailuresPerSecond = DefaultSecretFailureRate
	}
	if l.SecretFailureBurst <= 0 {
		l.SecretFailureBurst = DefaultSecretFailureBurst
	}
	return l
}

// Auth says who may do what over the control socket, from the peer's
// SO_PEERCRED.
type Auth struct {
	// Admin is who may send admin requests (ns add, del and set-secret,
	// rule add and del, and see other users' apps in show apps):
	// "cap_net_admin" (the default: uid 0, or a process whose effective
	// capabilities, read from /proc/PID/status, hold CAP_NET_ADMIN) or
	// "root" (uid 0 only).
	Admin string `yaml:"admin"`
}

// Validate checks a.
func (a Auth) Validate() error {
	switch a.Admin {
	case "", "cap_net_admin", "root":
		return nil
	}
	return fmt.Errorf("authorization: admin %q: want cap_net_admin or root: %w", a.Admin, flow.ErrInvalidValue)
}

// peerHasCap reports whether peer p's process holds capability c over
// the daemon's user namespace. It reads /proc/PID/status: the peer may
// have exec'd since it connected (racy, as every such check; SO_PEERCRED's
// pid is the one that connected). Its effective set counts only when the
// process is in the daemon's user namespace, where those capabilities
// act: any user gets a full set in a user namespace of its own (unshare
// -Ur), which gives it no right here. And only while the process is still
// the peer's user's: a pid taken since by another user's process says
// nothing of the peer.
func peerHasCap(p api.Cred, c uint) bool {
	if !sameUserNS(p.PID) {
		return false
	}
	if v, ok := procStatus(p.PID, "Uid:"); !ok || !euidIs(v, p.UID) {
		return false
	}
	v, ok := procStatus(p.PID, "CapEff:")
	if !ok {
		return false
	}
	eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
	return err == nil && eff&(1<<c) != 0
}

// sameUserNS reports whether process pid is in the daemon's user
// namespace: the namespaces' inodes, where the daemon may look at the
// peer's (that takes CAP_SYS_PTRACE for another user's process, which the
// systemd unit does not give), else their uid maps as the daemon reads
// them (anyone may), which differ for a namespace a user made: its map
// names the user's own uid, the daemon's (the initial one's) every uid.
func sameUserNS(pid int32) bool {
	var mine, theirs unix.Stat_t
	if !testhook.UserNSByUIDMap.Load() &&
		unix.Stat("/proc/self/ns/user", &mine) == nil && unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &theirs) == nil {
		return mine.Ino == theirs.Ino && mine.Dev == theirs.Dev
	}
	a, err1 := os.ReadFile("/proc/self/uid_map")
	b, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	return err1 == nil && err2 == nil && strings.Join(strings.Fields(string(a)), " ") == strings.Join(strings.Fields(string(b)), " ")
}

// euidIs reports whether the effective uid of a /proc/PID/status Uid:
// line (real, effective, saved, filesystem) is uid.
func euidIs(line string, uid uint32) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	v, err := strconv.ParseUint(f[1], 10, 32)
	return err == nil && uint32(v) == uid
}

// peerGroups returns the peer's supplementary groups (from
// /proc/PID/status) and its primary gid.
func peerGroups(p api.Cred) []uint32 {
	out := []uint32{p.GID}
	if v, ok := procStatus(p.PID, "Uid:"); !ok || !euidIs(v, p.UID) {
		return out // the pid is another user's process now: its groups are not the peer's
	}
	v, ok := procStatus(p.PID, "Groups:")
	if !ok {
		return out
	}
	for _, f := range strings.Fields(v) {
		if g, err := strconv.ParseUint(f, 10, 32); err == nil {
			out = append(out, uint32(g))
		}
	}
	return out
}

func procStatus(pid int32, key string) (string, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			return v, true
		}
	}
	return "", false
}

// isAdmin reports whether peer p may send admin requests.
func (d *Daemon) isAdmin(p api.Cred) bool {
	if p.UID == 0 {
		return true
	}
	if d.cfg.Auth.Admin == "root" {
		return false
	}
	return peerHasCap(p, unix.CAP_NET_ADMIN)
}

// needAdmin refuses an admin request from a peer that is not one.
func (d *Daemon) needAdmin(p api.Cred, what string) error {
	if d.isAdmin(p) {
		return nil
	}
	need := "uid 0 or CAP_NET_ADMIN"
	if d.cfg.Auth.Admin == "root" {
		need = "uid 0"
	}
	return fmt.Errorf("%s needs %s (peer uid %d): %w", what, need, p.UID, flow.ErrPermission)
}

// mayBindPort refuses a port below 1024 to a peer without
// CAP_NET_BIND_SERVICE, as the kernel does.
func mayBindPort(p api.Cred, e flow.Endpoint) error {
	if !sessions.PrivilegedPort(e.Port) || p.UID == 0 || peerHasCap(p, unix.CAP_NET_BIND_SERVICE) {
		return nil
	}
	return fmt.Errorf("bind %s: port %d is below %d and needs CAP_NET_BIND_SERVICE (peer uid %d): %w",
		e.URI(), e.Port, sessions.PrivilegedPortEnd, p.UID, flow.ErrPermission)
}

// uidUse is what the apps of one uid hold. Guarded by Daemon.mu.
type uidUse struct {
	apps int
	mem  uint64 // segment memory reserved
}

// reserveLocked admits an app of peer p that may hold mem bytes of
// segments, or says which limit it is over. It expects d.mu held.
func (d *Daemon) reserveLocked(p api.Cred, mem uint64) error {
	lim := d.limits
	if lim.MaxApps > 0 && d.apps >= lim.MaxApps {
		return fmt.Errorf("%d apps attached, the daemon's limit: %w", d.apps, flow.ErrLimit)
	}
	if p.UID != 0 {
		u := d.uids[p.UID]
		if lim.MaxAppsPerUID > 0 && u.apps >= lim.MaxAppsPerUID {
			return fmt.Errorf("uid %d has %d apps attached, its limit: %w", p.UID, u.apps, flow.ErrLimit)
		}
		if u.mem+mem > lim.SegmentMemoryPerUID {
			return fmt.Errorf("uid %d would hold %d bytes of segments, over its limit of %d: %w",
				p.UID, u.mem+mem, lim.SegmentMemoryPerUID, flow.ErrNoMemory)
		}
		u.apps++
		u.mem += mem
		d.uids[p.UID] = u
	}
	d.apps++
	return nil
}

// unreserveLocked gives back what reserveLocked took.
func (d *Daemon) unreserveLocked(p api.Cred, mem uint64) {
	d.apps--
	if p.UID == 0 {
		return
	}
	u := d.uids[p.UID]
	u.apps--
	u.mem -= min(mem, u.mem)
	if u.apps <= 0 {
		delete(d.uids, p.UID)
		return
	}
	d.uids[p.UID] = u
}
