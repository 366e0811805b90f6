package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

func init() {
	// ct-ping dials a cut-through UDP session to the listener at arg,
	// sends "ping" and prints the answer: its wake-ups go through the
	// epoll set the daemon made in its uid's name (waitSetFor).
	childApps["ct-ping"] = func(sock, arg string) int {
		a, err := app.Attach(context.Background(), app.Options{Socket: sock, Name: "ct-ping"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, "udp://"+arg)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer c.Close()
		b := make([]byte, 64)
		for range 3 {
			if _, err := c.Write([]byte("ping")); err != nil {
				fmt.Println(err)
				return 1
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(b)
			if err != nil {
				fmt.Println(err)
				return 1
			}
			fmt.Println(string(b[:n]))
		}
		return 0
	}
}

// TestEpollCreateAs: the epoll set made for another uid works as one, and
// the daemon's threads keep their credentials.
func TestEpollCreateAs(t *testing.T) {
	needRootHere(t, "needs root to make an epoll set in another user's name")
	fd, err := epollCreateAs(65534)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	efd, err := unix.Eventfd(1, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		t.Fatal(err)
	}
	evs := make([]unix.EpollEvent, 1)
	if n, err := unix.EpollWait(fd, evs, 1000); n != 1 || err != nil {
		t.Fatalf("epoll_wait: %d %v, want the eventfd's event", n, err)
	}
	// Every thread of the process still has real uid 0: the one that
	// changed it for the call is gone.
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "status"))
		if err != nil {
			continue // ended meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 5 && f[0] == "Uid:" && (f[1] != "0" || f[2] != "0") {
				t.Errorf("thread %s: %s, want real and effective uid 0", e.Name(), l)
			}
		}
	}
}

// TestCutThroughWithAppOfAnotherUser: an app of uid 65534, whose epoll set
// the daemon makes in that uid's name, and a root app trade datagrams over
// a cut-through session: each wakes the other.
func TestCutThroughWithAppOfAnotherUser(t *testing.T) {
	needRootHere(t, "needs root to run an app as another user")
	dir, bin := binaryForNobody(t)
	sock := filepath.Join(dir, "api.sock")
	d := startDaemon(t, func(c *Config) { c.Socket, c.SocketMode = sock, 0o666 })
	srv := attach(t, d, app.Options{Name: "echo"})
	pc, err := srv.ListenPacket("udp://127.0.0.1:7934")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			if string(b[:n]) == "ping" {
				pc.WriteTo([]byte("pong"), from)
			}
		}
	}()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childAppEnv+"=ct-ping", childSockEnv+"="+sock, childArgEnv+"=127.0.0.1:7934")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if got := strings.Fields(string(out)); err != nil || len(got) != 3 || got[0] != "pong" || got[2] != "pong" {
		t.Fatalf("the app of uid 65534: %v:\n%s", err, out)
	}
}
