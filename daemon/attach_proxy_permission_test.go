package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

func init() {
	// proxy-attach attaches as a proxy app over the raw protocol (the
	// app library offers no proxy) and prints the daemon's answer.
	childApps["proxy-attach"] = func(sock, _ string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := api.DialClient(ctx, sock, api.ClientOptions{Name: "proxy"})
		if err != nil {
			fmt.Println(err)
			return 2
		}
		defer cl.Close()
		_, fds, err := cl.Call(ctx, &api.Attach{Name: "proxy", Scope: flow.ScopeGlobal | flow.ScopeLocal,
			Proxy: true, ProxyTransports: []flow.Transport{flow.TransportTCP}})
		api.CloseFDs(fds)
		if err == nil {
			fmt.Println("attached")
			return 1
		}
		fmt.Println(err)
		if !errors.Is(err, flow.ErrPermission) {
			return 1
		}
		return 0
	}
}

// TestProxyAttachNeedsAdmin: a proxy app listens on every port of its
// namespace, the privileged ones among them, and takes every connect of
// the namespace's apps to a port no one else listens on (another user's
// app dialling a service of the host, with what it sends). An app of uid
// 65534 asking for it is refused, told what it needs; root's proxy
// attaches. Before, any user who could reach the socket attached one.
func TestProxyAttachNeedsAdmin(t *testing.T) {
	needRootHere(t, "needs root to run an app as another user")
	dir, bin := binaryForNobody(t)
	sock := filepath.Join(dir, "api.sock")
	startDaemon(t, func(c *Config) { c.Socket, c.SocketMode = sock, 0o666 })

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childAppEnv+"=proxy-attach", childSockEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	got := strings.TrimSpace(string(out))
	t.Logf("proxy attach as uid 65534: %s", got)
	if err != nil || !strings.Contains(got, "CAP_NET_ADMIN") {
		t.Errorf("proxy attach as uid 65534: %v: %q, want a refusal naming what it needs", err, got)
	}

	// Root's proxy attaches.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, sock, api.ClientOptions{Name: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, fds, err := cl.Call(ctx, &api.Attach{Name: "proxy", Scope: flow.ScopeGlobal | flow.ScopeLocal,
		Proxy: true, ProxyTransports: []flow.Transport{flow.TransportTCP}})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatalf("proxy attach as root: %v", err)
	}
}

// TestAdminCapabilityIsTheDaemonsUserNamespaces: a user's process holds
// every capability in a user namespace of its own (unshare -Ur), which
// gives it none over the daemon's: uid 65534 root in a user namespace it
// owns is refused a proxy attach (an admin request) as uid 65534 is, where
// before its effective set, read from /proc, made it an admin. The same
// uid with CAP_NET_ADMIN in the daemon's user namespace (an ambient
// capability) is one, and attaches.
func TestAdminCapabilityIsTheDaemonsUserNamespaces(t *testing.T) {
	needRootHere(t, "needs root to run an app as another user")
	// The peer's namespace as the daemon tells it with CAP_SYS_PTRACE
	// (this test's), and by its uid map alone (the systemd unit's).
	for _, byMap := range []bool{false, true} {
		t.Run(fmt.Sprintf("uid-map-%v", byMap), func(t *testing.T) {
			testhook.UserNSByUIDMap.Store(byMap)
			defer testhook.UserNSByUIDMap.Store(false)
			adminCapabilityInUserNS(t)
		})
	}
}

func adminCapabilityInUserNS(t *testing.T) {
	dir, bin := binaryForNobody(t)
	sock := filepath.Join(dir, "api.sock")
	startDaemon(t, func(c *Config) { c.Socket, c.SocketMode = sock, 0o666 })
	run := func(attr *syscall.SysProcAttr) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), childAppEnv+"=proxy-attach", childSockEnv+"="+sock)
		cmd.SysProcAttr = attr
		out, _ := cmd.CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	// Root inside (its uid 0 mapped to 65534 outside, where SO_PEERCRED
	// reads it), every capability in its own namespace.
	own := run(&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}}})
	if !strings.Contains(own, "CAP_NET_ADMIN") || strings.Contains(own, "attached") {
		t.Errorf("uid 65534, root in a user namespace of its own: %q, want a refusal naming what it needs", own)
	}
	withCap := run(&syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN}})
	if withCap != "attached" {
		t.Errorf("uid 65534 with CAP_NET_ADMIN: %q, want attached", withCap)
	}
}
