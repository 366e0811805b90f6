package daemon

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPIPv6ExtHeadersAsKernel: a kernel client on host A whose socket
// carries IPv6 extension headers (a destination options header, then a
// hop-by-hop header too, set with IPV6_DSTOPTS and IPV6_HOPOPTS: every
// segment it sends has them) talks to a kernel listener on host B and to
// an app's: both take the connection and echo 256 KiB exact, as Linux
// does such segments.
func TestTCPIPv6ExtHeadersAsKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "ext"})
	const kport, aport = 7340, 7341
	kln := kernelListen(t, rig.B, "[::]:"+strconv.Itoa(kport))
	aln := listenApp(t, a, "tcp://[::]:"+strconv.Itoa(aport))
	for _, ln := range []net.Listener{kln, aln} {
		go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
	}
	padN := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header (the kernel's), length 0 (8 bytes), PadN of 4
	for _, opts := range []struct {
		name string
		set  map[int][]byte
	}{
		{"destination options", map[int][]byte{unix.IPV6_DSTOPTS: padN}},
		{"hop-by-hop and destination options", map[int][]byte{unix.IPV6_HOPOPTS: padN, unix.IPV6_DSTOPTS: padN}},
	} {
		for _, srv := range []struct {
			name string
			port int
		}{{"kernel", kport}, {"xsessiond", aport}} {
			t.Run(opts.name+"/"+srv.name, func(t *testing.T) {
				to := netip.AddrPortFrom(rig.B.IPv6, uint16(srv.port)).String()
				var c net.Conn
				if err := rig.A.Do(func() (err error) {
					dl := net.Dialer{Timeout: 3 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
						var serr error
						err := rc.Control(func(fd uintptr) {
							for opt, v := range opts.set {
								if serr == nil {
									serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, opt, string(v))
								}
							}
						})
						if err != nil {
							return err
						}
						return serr
					}}
					c, err = dl.Dial("tcp6", to)
					return err
				}); err != nil {
					t.Fatalf("dial %s: %v", to, err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				data := pattern(3, 256<<10)
				go c.Write(data)
				got := make([]byte, len(data))
				if n, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("echo of 256 KiB: %d bytes, %v (equal %v)", n, err, bytes.Equal(got, data))
				}
			})
		}
	}
}
