package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestFollowInterface: a namespaces[] entry naming the config file's
// interface follows --iface and --netns; entries naming other interfaces,
// and all of them when the daemon runs on an interface the file lists,
// stay as they are.
func TestFollowInterface(t *testing.T) {
	file := []InterfaceConfig{{Name: "eth1"}, {Name: "eth2", Netns: "red"}}
	ns := []daemon.NamespaceConfig{
		{ID: "blue", Iface: "eth1"},
		{ID: "pinned", Iface: "eth1", Netns: "other"},
		{ID: "lo", Iface: "lo"},
		{ID: "red", Iface: "eth2", Netns: "red"},
	}
	got := followInterface(ns, file, InterfaceConfig{Name: "vb", Netns: "wb"})
	want := []daemon.NamespaceConfig{
		{ID: "blue", Iface: "vb"},
		{ID: "pinned", Iface: "eth1", Netns: "other"},
		{ID: "lo", Iface: "lo"},
		{ID: "red", Iface: "eth2", Netns: "red"},
	}
	for i := range want {
		if got[i].Iface != want[i].Iface || got[i].Netns != want[i].Netns {
			t.Errorf("--iface vb --netns wb: entry %s: iface %q netns %q, want %q %q", want[i].ID, got[i].Iface, got[i].Netns, want[i].Iface, want[i].Netns)
		}
	}
	if ns[0].Iface != "eth1" {
		t.Error("followInterface changed the entries it was given")
	}
	if got := followInterface(ns, file, InterfaceConfig{Name: "eth2", Netns: "red"}); got[0].Iface != "eth1" {
		t.Errorf("--iface eth2 --netns red, listed in the file: blue's iface %q, want eth1 kept", got[0].Iface)
	}
	// An entry with the file interface's netns spelled out follows --netns.
	got = followInterface([]daemon.NamespaceConfig{{ID: "x", Iface: "eth2", Netns: "red"}}, file[1:], InterfaceConfig{Name: "vb", Netns: "wb"})
	if got[0].Iface != "vb" || got[0].Netns != "wb" {
		t.Errorf("entry naming eth2 in red, daemon on vb in wb: %q in %q", got[0].Iface, got[0].Netns)
	}
}

// TestRunSampleConfigOnAnotherInterface runs the daemon binary with the
// sample config deploy/xsessiond.yaml, whose interface and namespace
// "blue" name eth1, on the rig's veth with --netns and --iface: the
// daemon starts, namespace blue is on the daemon's interface, and an app
// attached to it serves peers on the wire.
func TestRunSampleConfigOnAnotherInterface(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, _ := binaries(t)
	dir := t.TempDir()
	b, err := os.ReadFile("../../deploy/xsessiond.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "xsessiond.yaml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var blue *daemon.NamespaceConfig
	for i := range cfg.Namespaces {
		if cfg.Namespaces[i].ID == "blue" {
			blue = &cfg.Namespaces[i]
		}
	}
	if blue == nil || len(cfg.Interfaces) != 1 || blue.Iface != cfg.Interfaces[0].Name || blue.Iface == rig.B.Link {
		t.Fatalf("the sample config no longer has namespace blue on its interface, another than %s: nothing to test", rig.B.Link)
	}
	sock := filepath.Join(dir, "api.sock")
	d := startProcess(t, xs, "run", "--config", cfgPath, "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock, "--metrics-addr", "")
	d.waitLine(t, "xsessiond started", 15*time.Second)

	out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "namespaces").CombinedOutput()
	if err != nil {
		t.Fatalf("show namespaces: %v: %s", err, out)
	}
	// The default namespace is on the daemon's interface: blue must have
	// its IFINDEX.
	ifindex := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ifindex[f[0]] = f[1]
		}
	}
	if ifindex["blue"] == "" || ifindex["blue"] != ifindex["default"] {
		t.Errorf("namespace blue is not on the daemon's interface %s:\n%s", rig.B.Link, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Namespace: "blue", Secret: blue.Secret, Name: "in-blue"})
	if err != nil {
		t.Fatalf("attach to blue: %v", err)
	}
	defer a.Close()
	echoServer(t, a, 9100)
	if err := echoOnce(t, rig, 9100); err != nil {
		t.Fatalf("an app of namespace blue on the wire: %v", err)
	}
	a.Close()
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond exited %d", code)
	}
}
