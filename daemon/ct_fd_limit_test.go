package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

func init() {
	// fd-starved echoes on the UDP listener at arg with its descriptor
	// limit set to a few more than it has open once listening: cut-through
	// sessions past that come without their descriptors.
	childApps["fd-starved"] = func(sock, arg string) int {
		a, err := app.Attach(context.Background(), app.Options{Socket: sock, Name: "fd-starved"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer a.Close()
		pc, err := a.ListenPacket("udp://" + arg)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		var lim unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		lim.Cur = uint64(len(ents) + 12)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("ready")
		b := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				fmt.Println(err)
				return 1
			}
			pc.WriteTo(b[:n], from)
		}
	}
}

// TestAppAtDescriptorLimitKeepsServing: a listening app at its descriptor
// limit, to which another app opens more cut-through sessions than it has
// room for, loses those sessions (their descriptors never reach it: they
// end, the dialer's writes going nowhere) and keeps serving: once the
// sessions close, a new one is echoed. Before, the first notice whose
// descriptors did not fit (MSG_CTRUNC) failed the app's control
// connection, and the app with everything it had stopped.
func TestAppAtDescriptorLimitKeepsServing(t *testing.T) {
	d := startDaemon(t)
	const addr = "127.0.0.1:7936"
	c := startChildApp(t, "fd-starved", d.Socket(), addr)
	c.expect(t, "ready")
	cl := attach(t, d, app.Options{Name: "flood"})
	var conns []net.Conn
	closeAll := func() {
		for _, x := range conns {
			x.Close()
		}
		conns = nil
	}
	defer closeAll()
	for i := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		x, err := cl.Dial(ctx, "udp://"+addr)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, x)
		x.Write([]byte(strconv.Itoa(i)))
	}
	// The sessions the app took are echoed; those it could not, not.
	echoed := 0
	b := make([]byte, 64)
	for i, x := range conns {
		x.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		if n, err := x.Read(b); err == nil && string(b[:n]) == strconv.Itoa(i) {
			echoed++
		}
	}
	if echoed == 0 || echoed == len(conns) {
		t.Fatalf("%d of %d sessions echoed: want the app to have taken some, and run out of descriptors for the rest", echoed, len(conns))
	}
	t.Logf("%d of %d sessions echoed before the app ran out of descriptors", echoed, len(conns))
	closeAll()
	start, tries := time.Now(), 0
	defer func() {
		t.Logf("served a new session after %d tries, %v", tries, time.Since(start).Round(time.Millisecond))
	}()
	waitFor(t, "the app to serve a new session", 10*time.Second, func() bool {
		tries++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		x, err := cl.Dial(ctx, "udp://"+addr)
		if err != nil {
			t.Logf("try %d: %v", tries, err)
			return false
		}
		defer x.Close()
		x.Write([]byte("again"))
		x.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := x.Read(b)
		return err == nil && string(b[:n]) == "again"
	})
}
