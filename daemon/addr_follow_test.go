package daemon

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPWildcardFollowsNewAddress: an address added to host B while the
// daemon runs reaches an app's wildcard TCP listener as soon as netlink
// announces it, as it reaches a kernel listener at once. Until the
// daemon follows it, the XDP program passes a SYN to that address to the
// kernel, where only the port's reservation is bound, and the kernel
// refuses it: a kernel client on host A sees ECONNREFUSED.
func TestTCPWildcardFollowsNewAddress(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "server"})
	for i, tc := range []struct {
		wildcard, added string
		prefix          int
	}{
		{"0.0.0.0", "10.77.0.50", 24},
		{"[::]", "fd77::50", 64},
	} {
		t.Run(tc.added, func(t *testing.T) {
			port := 7310 + i
			ln := listenApp(t, a, "tcp://"+tc.wildcard+":"+strconv.Itoa(port))
			go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
			added := netip.MustParseAddr(tc.added)
			to := netip.AddrPortFrom(added, uint16(port)).String()
			args := []string{"-n", rig.B.Name, "addr", "add", added.String() + "/" + strconv.Itoa(tc.prefix), "dev", rig.B.Link}
			if added.Is6() {
				args = append(args, "nodad")
			}
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
			t.Cleanup(func() {
				exec.Command("ip", "-n", rig.B.Name, "addr", "del", added.String()+"/"+strconv.Itoa(tc.prefix), "dev", rig.B.Link).Run()
			})
			since := time.Now()
			refused := 0
			for {
				var c net.Conn
				err := rig.A.Do(func() (err error) {
					c, err = net.DialTimeout("tcp", to, 2*time.Second)
					return err
				})
				if errors.Is(err, syscall.ECONNREFUSED) && time.Since(since) < 3*time.Second {
					refused++
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatalf("dial %s %v after the address was added (%d refused before): %v", to, time.Since(since), refused, err)
				}
				took := time.Since(since)
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				msg := []byte("to an address added a moment ago")
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
					t.Fatalf("echo: %q, %v", got, err)
				}
				t.Logf("first connection accepted %v after the address was added (%d refused before)", took, refused)
				// The view's netlink event comes within milliseconds; a
				// look once a second would leave it refused for half a
				// second on average.
				if took > 250*time.Millisecond {
					t.Errorf("the app's listener took the address %v after it was added (%d connections refused): want it followed at once", took, refused)
				}
				return
			}
		})
	}
}
