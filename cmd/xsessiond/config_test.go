package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/tcp"
)

func TestParseConfigSample(t *testing.T) {
	b, err := os.ReadFile("../../deploy/xsessiond.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("the sample config does not parse: %v", err)
	}
	if c.Socket != DefaultSocket || len(c.Interfaces) == 0 || len(c.Namespaces) == 0 || len(c.Rules) == 0 {
		t.Fatalf("sample config parsed to %+v", c)
	}
	if c.SchedPolicy != daemon.SchedKeep {
		t.Fatalf("sample config: sched_policy %q, want the default %q", c.SchedPolicy, daemon.SchedKeep)
	}
	if c.TCP.ConnectTimeout != 30*time.Second {
		t.Fatalf("sample config: tcp connect_timeout %v, want 30s", c.TCP.ConnectTimeout)
	}
	if c.TCP.CloseTimeout != 60*time.Second {
		t.Fatalf("sample config: tcp close_timeout %v, want 60s", c.TCP.CloseTimeout)
	}
	if d := offSetting(c.TCP.AckDelay); d != tcp.DefaultAckDelay {
		t.Fatalf("sample config: tcp ack_delay %v, want the default %v", d, tcp.DefaultAckDelay)
	}
	if r := c.Interfaces[0].Reassembly; r != (ReassemblyConfig{MaxDatagrams: 64, MaxFragments: 128, Timeout: 0}) {
		t.Fatalf("sample config: reassembly %+v", r)
	}
	if ic := c.Interfaces[0]; offSetting(ic.IdleSpin) != datapath.DefaultIdleSpin || offSetting(ic.IdleSpinMax) != datapath.DefaultIdleSpinMax {
		t.Fatalf("sample config: idle_spin %v, idle_spin_max %v: want the defaults", offSetting(ic.IdleSpin), offSetting(ic.IdleSpinMax))
	}
}

// TestParseConfigIdleSpin: unset is the default (0), 0s is off (negative),
// a duration is itself.
func TestParseConfigIdleSpin(t *testing.T) {
	for _, tc := range []struct {
		yaml      string
		spin, max time.Duration
	}{
		{"interfaces: [{name: a}]\n", 0, 0},
		{"interfaces: [{name: a, idle_spin: 0s, idle_spin_max: 0s}]\n", -1, -1},
		{"interfaces: [{name: a, idle_spin: 50us, idle_spin_max: 5ms}]\n", 50 * time.Microsecond, 5 * time.Millisecond},
	} {
		c, err := ParseConfig([]byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		ic := c.Interfaces[0]
		if s, m := offSetting(ic.IdleSpin), offSetting(ic.IdleSpinMax); s != tc.spin || m != tc.max {
			t.Errorf("%q: idle_spin %v, idle_spin_max %v; want %v, %v", tc.yaml, s, m, tc.spin, tc.max)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"sockett: /x\n", `unknown key "sockett" at the top level (known there: authorization, control,`},
		{"log_level: loud\n", "log_level"},
		{"sched_policy: fifo\n", "sched_policy"},
		{"interfaces: [{queues: 1}]\n", "name is empty"},
		{"interfaces: [{name: a}, {name: a}]\n", "listed twice"},
		{"interfaces: [{name: a, xdp_mode: turbo}]\n", "xdp_mode"},
		{"namespaces: [{id: x}]\n", "iface is empty"},
		{"namespaces: [{id: x, iface: a}, {id: x, iface: a}]\n", "listed twice"},
		{"rules: [{proto: icmp, action: drop}]\n", "proto"},
		{"rules: [{proto: udp, local: 10.0.0.1, action: drop}]\n", "prefix"},
		{"rules: [{proto: udp, action: forward}]\n", "needs app"},
		{"rules: [{proto: udp, action: drop, scope: galaxy}]\n", "scope"},
		{"rules: [{proto: udp, action: drop, app: foo}]\n", "goes with action forward only"},
		{"rules: [{proto: udp, local: 10.0.0.0/8, remote: \"::/0\", action: drop}]\n", "different families"},
		{"limits: {secret_failures_per_second: 010}\n", "leading 0"},
		{"tcp: {connect_timeout: -1s}\n", "connect_timeout"},
		{"tcp: {close_timeout: -1s}\n", "close_timeout"},
		{"tcp: {ack_delay: -1ms}\n", "ack_delay"},
		{"tcp: {ack_delay: 1s}\n", "ack_delay"},
		{"tcp: {buffer_memory: -1}\n", "buffer_memory"},
		{"tcp: {max_time_wait: -1}\n", "max_time_wait"},
		{"tcp: {syn_rate: -2}\n", "syn_rate"},
		{"tcp: {buffer_memory: 1048576, user_buffer_memory: 2097152}\n", "user_buffer_memory"},
		{"interfaces: [{name: a, reassembly: {max_datagrams: -1}}]\n", "reassembly"},
		{"interfaces: [{name: a, reassembly: {max_fragments: 5000}}]\n", "reassembly"},
		{"interfaces: [{name: a, reassembly: {timeout: -1s}}]\n", "reassembly"},
		{"interfaces: [{name: a, reassembly: {max_datagram: 1}}]\n", `unknown key "max_datagram" under reassembly (known there: max_datagrams, max_fragments, timeout)`},
		{"interfaces: [{name: a, idle_spin: -1us}]\n", "idle_spin"},
		{"interfaces: [{name: a, idle_spin_max: 2s}]\n", "idle_spin"},
		{"interfaces: [{name: a, idle_spin: fast}]\n", `"fast" is not a duration`},
		{"interfaces: [{name: a, queues: many}]\n", `"many" is not a whole number`},
		{"interfaces: [{name: a, queus: 1}]\n", `unknown key "queus" in an interface`},
		{"namespaces: [{id: x, iface: a, secrett: 1}]\n", `unknown key "secrett" in a namespace`},
		{"limits: {max_app: 1}\n", `unknown key "max_app" under limits`},
		{"interfaces: [\n", "did not find expected node content"},
		{"namespaces: [{id: x, iface: a}]\n", `namespace "x": no secret`},
		{"limits: {secret_failures_per_second: .inf}\n", "finite"},
		{"limits: {secret_failures_per_second: .nan}\n", "finite"},
		{"log_level: info\n---\nlog_level: loud\n", "more than one YAML document"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to mention %q", tc.yaml, err, tc.want)
		}
	}
	if c, err := ParseConfig(nil); err != nil || c.Socket != DefaultSocket {
		t.Errorf("empty config: %v %+v", err, c)
	}
}

// TestMergeRunConfigSched: the file's sched_policy holds unless
// --sched-policy is given; neither gives keep; a bad flag is refused.
func TestMergeRunConfigSched(t *testing.T) {
	for _, tc := range []struct {
		file  string
		flags []string
		want  string
		err   bool
	}{
		{"", nil, daemon.SchedKeep, false},
		{"sched_policy: batch\n", nil, daemon.SchedBatch, false},
		{"sched_policy: batch\n", []string{"--sched-policy", "keep"}, daemon.SchedKeep, false},
		{"", []string{"--sched-policy", "batch"}, daemon.SchedBatch, false},
		{"", []string{"--sched-policy", "rr"}, "", true},
	} {
		c, err := ParseConfig([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		cmd := newRunCmd()
		if err := cmd.Flags().Parse(append([]string{"--iface", "a"}, tc.flags...)); err != nil {
			t.Fatal(err)
		}
		f := runFlags{iface: "a", socket: DefaultSocket, logLevel: "info", xdpMode: "auto", checksum: "auto"}
		f.sched, _ = cmd.Flags().GetString("sched-policy")
		_, err = mergeRunConfig(cmd, f, c)
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), "--sched-policy") {
				t.Errorf("%q %v: error %v, want one naming --sched-policy", tc.file, tc.flags, err)
			}
			continue
		}
		if err != nil || c.SchedPolicy != tc.want {
			t.Errorf("%q %v: policy %q (err %v), want %q", tc.file, tc.flags, c.SchedPolicy, err, tc.want)
		}
	}
}

// TestMergeRunConfigIface: --iface names another interface and keeps the
// file's settings for it.
func TestMergeRunConfigIface(t *testing.T) {
	dp := mergedConfig(t, "interfaces: [{name: a, queues: 2, checksum: verify, idle_spin: 50us, idle_spin_max: 0s, reassembly: {max_datagrams: 8}}]\n", "b").Datapath
	if dp.IfName != "b" || dp.Queues != 2 || dp.Checksum != "verify" || dp.IdleSpin != 50*time.Microsecond || dp.IdleSpinMax >= 0 || dp.Reassembly.MaxDatagrams != 8 {
		t.Fatalf("merged %+v: want interface b with the file's queues, checksum, idle spin and reassembly", dp)
	}
}

// TestRestartNeeded: a SIGHUP's config that changes the TCP keys, the
// limits or the control socket's bounds is named as needing a restart; one
// that changes nothing of them is not.
func TestRestartNeeded(t *testing.T) {
	merged := func(file string) daemon.Config { return mergedConfig(t, file, "a") }
	cur := merged("")
	if got := restartNeeded(cur, merged("")); len(got) != 0 {
		t.Fatalf("the same config: %v", got)
	}
	for _, tc := range []struct{ file, name string }{
		{"tcp: {close_timeout: 5s}\n", "tcp.close_timeout"},
		{"tcp: {buffer_memory: 1073741824}\n", "tcp.buffer_memory"},
		{"tcp: {user_buffer_memory: 1048576}\n", "tcp.user_buffer_memory"},
		{"tcp: {connect_timeout: 5s}\n", "tcp.connect_timeout"},
		{"tcp: {max_time_wait: 100}\n", "tcp.max_time_wait"},
		{"tcp: {syn_rate: -1}\n", "tcp.syn_rate"},
		{"limits: {max_ports_per_uid: 10}\n", "limits"},
		{"control: {max_conns_per_uid: 10}\n", "control"},
	} {
		got := restartNeeded(cur, merged(tc.file))
		if len(got) != 1 || !strings.HasPrefix(got[0], tc.name+" ") {
			t.Errorf("%q: %v, want one change named %s", tc.file, got, tc.name)
		}
	}
}

// mergedConfig is the daemon's configuration from the config file text
// file and run's flags with --iface iface and their defaults otherwise.
func mergedConfig(t *testing.T, file, iface string) daemon.Config {
	t.Helper()
	c, err := ParseConfig([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cmd := newRunCmd()
	if err := cmd.Flags().Parse([]string{"--iface", iface}); err != nil {
		t.Fatal(err)
	}
	dc, err := mergeRunConfig(cmd, runFlags{iface: iface, socket: DefaultSocket, logLevel: "info", xdpMode: "auto", checksum: "auto", sched: daemon.SchedKeep}, c)
	if err != nil {
		t.Fatal(err)
	}
	return dc
}

// TestSampleConfigNamesEveryKey: every key the config file takes is in
// the sample, set or in a comment, so that the sample is the file's
// reference.
func TestSampleConfigNamesEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../deploy/xsessiond.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range configSections {
		for _, k := range yamlKeys(s.typ) {
			if !regexp.MustCompile(`(?m)^[ \t]*(#[ \t]*)?(- )?` + k + `:`).Match(b) {
				t.Errorf("deploy/xsessiond.yaml does not name the key %q %s", k, s.where)
			}
		}
	}
}

// TestConfigExposure: a config file with namespaces that every user may
// read, or a namespace with the sample's published secret, is named at
// start and on SIGHUP; a file only its owner reads, with secrets of its
// own, is not.
func TestConfigExposure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xsessiond.yaml")
	write := func(text string, mode os.FileMode) *Config {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	own := "namespaces: [{id: blue, iface: eth1, secret: 42}]\n"
	if got := write(own, 0o644).exposure(path); len(got) != 1 || !strings.Contains(got[0], "chmod 600") {
		t.Errorf("mode 644: %q, want one line saying chmod 600", got)
	}
	if got := write(own, 0o600).exposure(path); len(got) != 0 {
		t.Errorf("mode 600, own secret: %q, want nothing", got)
	}
	if got := write("log_level: info\n", 0o644).exposure(path); len(got) != 0 {
		t.Errorf("no namespaces: %q, want nothing", got)
	}
	sample, err := os.ReadFile("../../deploy/xsessiond.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := write(string(sample), 0o600).exposure(path); len(got) != 1 || !strings.Contains(got[0], `namespace "blue" has the sample config's published secret`) {
		t.Errorf("the sample: %q, want its secret named", got)
	}
}
