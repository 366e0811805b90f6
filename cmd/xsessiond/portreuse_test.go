package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// cycleEnv makes the test binary run connectCycler instead of the tests.
const cycleEnv = "XSESSIOND_TEST_CONNECT_CYCLE"

// TestTCPPortsReusedAfterShed: an app of uid 65534, bound to 4 ports of the
// host, opens and closes wire TCP connections one after another, each
// closed by the app first (so that the daemon's end of it goes to
// TIME-WAIT), in a host B whose kernel has 8 ephemeral ports. At the bound
// the daemon gives up its oldest ports in TIME-WAIT, and the kernel hands
// them to the next connects: every connect must succeed, which it does
// only if gVisor's TIME-WAIT let go of the port too.
func TestTCPPortsReusedAfterShed(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	if err := rig.B.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("42000 42007"), 0)
	}); err != nil {
		t.Fatalf("narrowing host B's ephemeral ports: %v", err)
	}
	dir := nobodyDir(t, "xsessiond-cycle-")
	sock := filepath.Join(dir, "api.sock")
	cfg := filepath.Join(dir, "xsessiond.yaml")
	conf := fmt.Sprintf("socket: %s\nsocket_group: nogroup\ninterfaces:\n  - name: %s\n    netns: %s\nlimits:\n  max_ports_per_uid: 4\n",
		sock, rig.B.Link, rig.B.Name)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	startKernelEcho(t, rig, 7710)

	runAsNobody(t, dir, cycleEnv, map[string]any{"Sock": sock, "URI": fmt.Sprintf("tcp://%s:7710", rig.A.IPv4), "N": 40})
}

// connectCycler is what the test binary does as uid 65534 for
// TestTCPPortsReusedAfterShed: N connects to URI, one after another, each
// exchanging a byte and closed by the app. A connect refused at the port
// bound (ErrLimit: the last connection's port still draining) is tried
// again for a while; any other failure ends it with exit status 1.
func connectCycler(arg string) int {
	var p struct {
		Sock, URI string
		N         int
	}
	if err := json.Unmarshal([]byte(arg), &p); err != nil {
		fmt.Println("bad argument:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: p.Sock, Name: "cycler", Scope: flow.ScopeGlobal})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	defer a.Close()
	ports := map[string]int{}
	limited := 0
	for i := 0; i < p.N; {
		c, err := a.Dial(ctx, p.URI)
		if errors.Is(err, flow.ErrLimit) && limited < 500 {
			limited++
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			fmt.Printf("connect %d: %v\n", i, err)
			return 1
		}
		ports[c.LocalAddr().String()]++
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := []byte{byte(i)}
		if _, err := c.Write(b); err != nil {
			fmt.Printf("connect %d: write: %v\n", i, err)
			return 1
		}
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			fmt.Printf("connect %d: read %v, %v\n", i, b, err)
			return 1
		}
		c.Close()
		i++
	}
	reused := 0
	for _, n := range ports {
		if n > 1 {
			reused++
		}
	}
	fmt.Printf("%d connects from %d ports, %d of them used more than once; %d connects refused at the bound first\n", p.N, len(ports), reused, limited)
	if reused == 0 {
		fmt.Println("no port was used twice: the test did not test the reuse")
		return 1
	}
	return 0
}
