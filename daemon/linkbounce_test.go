package daemon

import (
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestLinkBounceKeepsServing: host B's link set down and up again, in
// either XDP mode, loses the daemon nothing it serves: a TCP connection
// made before goes on with the byte written while the link was down (the
// peer retransmits it), new TCP connections and UDP datagrams of both
// families reach the apps, and what an app sent while the link was down
// is each datagram sent or counted as a drop of its listener (no_route:
// a link taken down loses its routes, where a kernel socket's sendto
// fails with ENETUNREACH).
func TestLinkBounceKeepsServing(t *testing.T) {
	for _, mode := range []string{"generic", "native"} {
		t.Run(mode, func(t *testing.T) {
			const port = 7420
			rig, d := tcpRig(t, func(c *Config) { c.Datapath.XDPMode = mode })
			a := attach(t, d, app.Options{Name: "echo"})
			go echoServe(listenApp(t, a, "tcp://0.0.0.0:"+strconv.Itoa(port)))
			pc, err := a.ListenPacket("udp://:" + strconv.Itoa(port+1))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			var written atomic.Uint64 // datagrams the app's WriteTo took
			go func() {
				b := make([]byte, 2048)
				for {
					n, from, err := pc.ReadFrom(b)
					if err != nil {
						return
					}
					if _, err := pc.WriteTo(b[:n], from); err == nil {
						written.Add(1)
					}
				}
			}()
			c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
			defer c.Close()
			echo := func(c net.Conn, what string) {
				t.Helper()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte(what)); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				got := make([]byte, len(what))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != what {
					t.Fatalf("%s: read %q, %v", what, got, err)
				}
			}
			udp := func(what string) {
				t.Helper()
				echoFromBothFamilies(t, rig, port+1, what, func(netip.AddrPort) []byte { return []byte(what) })
			}
			echo(c, "before")
			udp("before")

			ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "down")
			waitFor(t, "interface_state down", 5*time.Second, func() bool { return d.Stats().InterfaceState == "down" })
			to := &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 9}
			for i := 0; i < 5000; i++ {
				if _, err := pc.WriteTo([]byte("while down"), to); err != nil {
					t.Fatalf("WriteTo while the link was down: %v", err)
				}
				written.Add(1)
			}
			if _, err := c.Write([]byte("x")); err != nil { // held by A's kernel until it is acknowledged
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "up")
			// The kernel flushes a downed link's IPv6 addresses
			// (keep_addr_on_down 0): B's is added again, as an operator's
			// network configuration would.
			ipIn(t, rig.B, "addr", "add", rig.B.IPv6.String()+"/64", "dev", rig.B.Link, "nodad")
			waitFor(t, "interface_state up", 5*time.Second, func() bool { return d.Stats().InterfaceState == "up" })

			udp("after")
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, 1)
			if _, err := io.ReadFull(c, got); err != nil || got[0] != 'x' {
				t.Fatalf("the connection made before: the byte written while the link was down: %q, %v", got, err)
			}
			echo(c, "after")
			c2 := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
			defer c2.Close()
			echo(c2, "a new connection")

			// Every datagram the app wrote is sent or counted dropped by
			// its listener (the app writes nothing more: udp() has had
			// its replies).
			var sent, dropped uint64
			waitFor(t, "every datagram the app wrote sent or counted", 5*time.Second, func() bool {
				out, err := show(t, d.Socket(), "listeners")
				if err != nil {
					t.Fatal(err)
				}
				var ls []ListenerView
				if err := json.Unmarshal(out, &ls); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				sent, dropped = 0, 0
				for _, l := range ls {
					if strings.HasPrefix(l.URI, "udp://") {
						sent += l.TxPackets
						dropped += l.Dropped
					}
				}
				return sent+dropped == written.Load()
			})
			st := d.Stats()
			if dropped == 0 || st.Totals.Drops["no_route"] < dropped {
				t.Errorf("the app's listeners dropped %d datagrams, the workers counted %d as no_route (%v); want the ones written while the link was down among them", dropped, st.Totals.Drops["no_route"], st.Totals.Drops)
			}
			t.Logf("%s: %d datagrams written, %d sent, %d dropped as no_route", mode, written.Load(), sent, dropped)
		})
	}
}
