package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// routeMTU gives h a route of mtu to dst alone, through its veth.
func routeMTU(t *testing.T, h *nstest.Host, dst netip.Addr, mtu int) {
	t.Helper()
	if err := h.Do(func() error {
		l, err := netlink.LinkByName(h.Link)
		if err != nil {
			return err
		}
		bits := dst.BitLen()
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index,
			Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(bits, bits)}, MTU: mtu})
	}); err != nil {
		t.Fatal(err)
	}
}

// rawUDP4 is a raw IPv4 socket of h that sees every UDP packet h's kernel
// delivers, IP header included (after reassembly).
type rawUDP4 struct{ fd int }

func openRawUDP4(t *testing.T, h *nstest.Host) *rawUDP4 {
	t.Helper()
	var fd int
	if err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &rawUDP4{fd: fd}
}

// drain throws away what the socket holds.
func (r *rawUDP4) drain() {
	var buf [2048]byte
	for {
		if _, _, err := unix.Recvfrom(r.fd, buf[:], unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// flags returns the IPv4 flags and fragment offset field of the first
// packet the socket received to port with a UDP payload of size bytes.
func (r *rawUDP4) flags(port uint16, size int) (uint16, error) {
	buf := make([]byte, 70000)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			continue
		}
		p := buf[:n]
		if n < 20 {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != port || int(binary.BigEndian.Uint16(p[ihl+4:])) != 8+size {
			continue
		}
		return binary.BigEndian.Uint16(p[6:8]), nil
	}
	return 0, fmt.Errorf("no packet of %d bytes to port %d", size, port)
}

// TestDontFragment: with a path MTU of 1,280 to host A in B's routes, IPv4
// and IPv6, a PacketConn and a connected Conn with SetDontFragment(true)
// send 1,000 bytes as one packet (IPv4: DF set, as A's raw socket sees
// it); a write of 1,400 bytes fails at once with EMSGSIZE, as on a kernel
// socket with IP_PMTUDISC_DO, and nothing reaches the daemon (no
// tx-dont-fragment drop); cleared, 1,400 bytes arrive, fragmented by the
// kernel path. The asynchronous report stays the fallback: when the path
// MTU shrank after a write was told the larger one, the datapath drops the
// datagram (counted), the next call returns EMSGSIZE, and the report makes
// the library ask the path MTU again.
func TestDontFragment(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	routeMTU(t, rig.B, rig.A.IPv4, 1280)
	routeMTU(t, rig.B, rig.A.IPv6, 1280)
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "df"})
	raw := openRawUDP4(t, rig.A)
	stats := func() (dfDrops, txKernel uint64) {
		s := d.Engine().Stats()
		return s.Totals.Drops["tx-dont-fragment"], s.Totals.TxKernel
	}
	// The workers publish their counters when idle: wait for a change.
	settle := func(want func(df, k uint64) bool) (uint64, uint64) {
		var df, k uint64
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if df, k = stats(); want(df, k) {
				break
			}
		}
		return df, k
	}
	for _, fam := range []struct {
		name        string
		uri, client string
		a, b        netip.Addr
	}{
		{"ipv4", "udp://0.0.0.0:0", "0.0.0.0:0", rig.A.IPv4, rig.B.IPv4},
		{"ipv6", "udp://[::]:0", "[::]:0", rig.A.IPv6, rig.B.IPv6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			cli, err := bindKernel(rig.A, fam.client)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			cport := uint16(cli.LocalAddr().(*net.UDPAddr).Port)
			pc, err := a.ListenPacketConn(fam.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			// A's first datagram tells the listener A's address.
			if _, err := cli.WriteTo([]byte("hi"), &net.UDPAddr{IP: fam.b.AsSlice(), Port: pc.LocalAddr().(*net.UDPAddr).Port}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dc, err := a.DialConn(ctx, "udp://"+netip.AddrPortFrom(fam.a, cport).String())
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()

			// arrives reports whether A receives msg within d, skipping
			// others (copies of earlier retries).
			arrives := func(msg []byte, d time.Duration) bool {
				cli.SetReadDeadline(time.Now().Add(d))
				for {
					n, _, err := cli.ReadFrom(buf)
					if err != nil {
						return false
					}
					if bytes.Equal(buf[:n], msg) {
						return true
					}
				}
			}
			for _, s := range []struct {
				name  string
				setDF func(bool) error
				send  func([]byte) error
			}{
				{"PacketConn", pc.SetDontFragment,
					func(b []byte) error { _, err := pc.WriteTo(b, from); return err }},
				{"Conn", dc.SetDontFragment,
					func(b []byte) error { _, err := dc.Write(b); return err }},
			} {
				// exchange sends msg until A receives it (the first may
				// wait for the neighbour).
				exchange := func(msg []byte) bool {
					for try := 0; try < 3; try++ {
						if err := s.send(msg); err != nil {
							t.Fatalf("%s: send %d bytes: %v", s.name, len(msg), err)
						}
						if arrives(msg, time.Second) {
							return true
						}
					}
					return false
				}
				checkDF := func(size int, want bool) {
					if !fam.a.Is4() {
						return
					}
					f, err := raw.flags(cport, size)
					if err != nil {
						t.Fatalf("%s: %v", s.name, err)
					}
					if got := f&0x4000 != 0; got != want || f&0x3fff != 0 {
						t.Errorf("%s: %d bytes: IPv4 flags and offset %#04x, want DF %v and one packet", s.name, size, f, want)
					}
				}

				if err := s.setDF(true); err != nil {
					t.Fatal(err)
				}
				raw.drain()
				r0 := reasmOKs(t, rig.A)
				small := fragFill(1, 1000)
				if !exchange(small) {
					t.Fatalf("%s: don't fragment, 1,000 bytes over mtu 1,280: A got nothing", s.name)
				}
				checkDF(1000, true)

				df0, k0 := stats()
				big := fragFill(2, 1400)
				// The write itself refuses it, as a kernel socket with
				// IP_PMTUDISC_DO: nothing reaches the daemon.
				err := s.send(big)
				if !errors.Is(err, syscall.EMSGSIZE) {
					t.Fatalf("%s: don't fragment, 1,400 bytes over mtu 1,280: write %v, want EMSGSIZE", s.name, err)
				}
				if arrives(big, 300*time.Millisecond) {
					t.Fatalf("%s: don't fragment, 1,400 bytes over mtu 1,280: A got them", s.name)
				}
				// Asked once and cached: the second is refused alike.
				if err := s.send(big); !errors.Is(err, syscall.EMSGSIZE) {
					t.Fatalf("%s: don't fragment, 1,400 bytes again: write %v, want EMSGSIZE", s.name, err)
				}
				if df1, k1 := stats(); df1 != df0 || k1 != k0 {
					t.Fatalf("%s: refused by the write, yet tx-dont-fragment %d -> %d, tx_kernel %d -> %d", s.name, df0, df1, k0, k1)
				}
				if r := reasmOKs(t, rig.A); r != r0 {
					t.Fatalf("%s: A reassembled %d datagrams with don't fragment set", s.name, r-r0)
				}
				k1 := k0
				// The session goes on.
				if !exchange(small) {
					t.Fatalf("%s: after EMSGSIZE, 1,000 bytes: A got nothing", s.name)
				}
				if df, _ := stats(); df != df0 {
					t.Fatalf("%s: tx-dont-fragment %d -> %d: a refused write reached the daemon", s.name, df0, df)
				}

				if err := s.setDF(false); err != nil {
					t.Fatal(err)
				}
				raw.drain()
				if !exchange(small) {
					t.Fatalf("%s: 1,000 bytes: A got nothing", s.name)
				}
				checkDF(1000, false)
				r0 = reasmOKs(t, rig.A)
				if !exchange(big) {
					t.Fatalf("%s: 1,400 bytes without don't fragment: A got nothing", s.name)
				}
				_, k2 := settle(func(_, k uint64) bool { return k > k1 })
				r := reasmOKs(t, rig.A) - r0
				t.Logf("%s: 1,400 bytes without don't fragment: kernel path %d, reassembled on A (IPv4) %d", s.name, k2-k1, r)
				if k2 == k1 || (fam.a.Is4() && r == 0) {
					t.Fatalf("%s: 1,400 bytes without don't fragment: kernel path %d, reassembled on A %d: want fragments", s.name, k2-k1, r)
				}
			}

			// The asynchronous report stays the fallback, for a path MTU
			// that shrinks after a write's check: with the route's MTU
			// raised, a fresh listener and session ask and are told 1,500,
			// which they keep 10 s. The route's MTU is then lowered to
			// 1,280, which the datapath follows within its resolver's
			// lifetimes (a next hop is resolved again 5 s after the last
			// time, a worker keeps its copy 1 s), well inside those 10 s.
			// Until then 1,400 bytes go out whole; from then on the
			// datapath drops them (counted) and reports it: the Conn's
			// next call returns EMSGSIZE; the PacketConn's reads do not
			// (an unconnected kernel socket reports no asynchronous
			// error), its next write of 1,400 bytes does. The report
			// clears the cache: the next write asks again and refuses at
			// once, and nothing more is dropped.
			routeMTU(t, rig.B, fam.a, 0)
			pc2, err := a.ListenPacketConn(fam.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer pc2.Close()
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			dc2, err := a.DialConn(ctx2, "udp://"+netip.AddrPortFrom(fam.a, cport).String())
			if err != nil {
				t.Fatal(err)
			}
			defer dc2.Close()
			big, refused := fragFill(3, 1400), fragFill(4, 1400)
			conns := []struct {
				name string
				df   func(bool) error
				send func([]byte) error
				next func(d time.Duration) error // the next call, which returns a pending report
			}{
				{"PacketConn", pc2.SetDontFragment,
					func(b []byte) error { _, err := pc2.WriteTo(b, from); return err },
					func(d time.Duration) error {
						// A read fails for no report: it times out.
						pc2.SetReadDeadline(time.Now().Add(d))
						if _, _, err := pc2.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
							return fmt.Errorf("ReadFrom: %v, want a timeout (no asynchronous error on an unconnected socket)", err)
						}
						// The report cleared the cache: the write asks
						// again and is refused at once.
						if _, err := pc2.WriteTo(big, from); err != nil {
							return err
						}
						return os.ErrDeadlineExceeded
					}},
				{"Conn", dc2.SetDontFragment,
					func(b []byte) error { _, err := dc2.Write(b); return err },
					func(d time.Duration) error {
						dc2.SetReadDeadline(time.Now().Add(d))
						_, err := dc2.Read(buf)
						return err
					}},
			}
			df0, _ := stats()
			asked := time.Now()
			for _, c := range conns {
				if err := c.df(true); err != nil {
					t.Fatal(err)
				}
				if err := c.send(big); err != nil { // asks: 1,500
					t.Fatalf("%s: 1,400 bytes, route mtu raised: write %v", c.name, err)
				}
			}
			routeMTU(t, rig.B, fam.a, 1280)
			reported := make([]bool, len(conns))
			for left := len(conns); left > 0; {
				if time.Since(asked) > 9*time.Second {
					t.Fatalf("reports after 9 s: %v: the datapath did not follow the route's mtu 1,280 within its resolver's lifetimes", reported)
				}
				for i, c := range conns {
					if reported[i] {
						continue
					}
					err := c.next(300 * time.Millisecond)
					switch {
					case errors.Is(err, syscall.EMSGSIZE):
						reported[i] = true
						left--
						continue
					case !errors.Is(err, os.ErrDeadlineExceeded):
						t.Fatalf("%s: waiting for the report: %v", c.name, err)
					}
					// Not dropped yet: the datapath still applies 1,500.
					if err := c.send(big); err != nil {
						t.Fatalf("%s: 1,400 bytes within the answer's 10 s: write %v, want it taken (the cache keeps 1,500)", c.name, err)
					}
				}
			}
			df1, _ := settle(func(df, _ uint64) bool { return df > df0+1 })
			if df1 < df0+2 {
				t.Fatalf("tx-dont-fragment %d -> %d: want a drop for each report", df0, df1)
			}
			t.Logf("fallback: reports after %v, tx-dont-fragment %d -> %d", time.Since(asked).Round(time.Millisecond), df0, df1)
			for _, c := range conns {
				if err := c.send(refused); !errors.Is(err, syscall.EMSGSIZE) {
					t.Fatalf("%s: 1,400 bytes after the report: write %v, want EMSGSIZE (the report cleared the cache)", c.name, err)
				}
			}
			if arrives(refused, 300*time.Millisecond) {
				t.Fatal("A got a datagram the writes refused")
			}
			if df2, _ := stats(); df2 != df1 {
				t.Fatalf("tx-dont-fragment %d -> %d: a refused write reached the daemon", df1, df2)
			}
		})
	}
}

// rawApp is an app attached to d through the bare protocol (no library).
func rawApp(t *testing.T, d *Daemon) *api.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if sv := cl.Server(); sv.Major != api.VersionMajor {
		t.Fatalf("daemon speaks %d.%d, want %d.x", sv.Major, sv.Minor, api.VersionMajor)
	}
	_, fds, err := api.Do[*api.AttachReply](ctx, cl, &api.Attach{Name: "raw"})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func rawBind(t *testing.T, cl *api.Client, uri string) flow.Handle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, fds, err := api.Do[*api.BindReply](ctx, cl, &api.Bind{URI: uri})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	return r.Handle
}

func askPathMTU(cl *api.Client, h flow.Handle, remote netip.Addr) (uint32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, fds, err := api.Do[*api.PathMTUReply](ctx, cl, &api.PathMTU{Handle: h, Remote: remote})
	api.CloseFDs(fds)
	if err != nil {
		return 0, err
	}
	return r.MTU, nil
}

// TestPathMTURequest: PathMTU answers the MTU the datapath sends with from
// an app's listener or session: the route's 1,280 to A, the link's to
// another neighbour; another app's handle, an unknown one, a remote of the
// other family and an app not attached get the session layer's errors; a
// daemon without a datapath answers ErrNotSupported (no limit known).
func TestPathMTURequest(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	routeMTU(t, rig.B, rig.A.IPv4, 1280)
	routeMTU(t, rig.B, rig.A.IPv6, 1280)
	var linkMTU int
	if err := rig.B.Do(func() error {
		l, err := netlink.LinkByName(rig.B.Link)
		if err == nil {
			linkMTU = l.Attrs().MTU
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, onB(rig))
	cl := rawApp(t, d)
	h4 := rawBind(t, cl, "udp://0.0.0.0:0")
	h6 := rawBind(t, cl, "udp://[::]:0")
	other := attach(t, d, app.Options{Name: "other"})
	opc, err := other.ListenPacketConn("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer opc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	odc, err := other.DialConn(ctx, "udp://"+netip.AddrPortFrom(rig.A.IPv4, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer odc.Close()

	neighbour4 := netip.MustParseAddr("10.77.0.3") // on the link, no route of its own
	for _, c := range []struct {
		name   string
		h      flow.Handle
		remote netip.Addr
		mtu    uint32
		err    error
	}{
		{"ipv4 route mtu", h4, rig.A.IPv4, 1280, nil},
		{"ipv4-mapped", h4, netip.AddrFrom16(rig.A.IPv4.As16()), 1280, nil},
		{"ipv4 link mtu", h4, neighbour4, uint32(linkMTU), nil},
		{"ipv6 route mtu", h6, rig.A.IPv6, 1280, nil},
		{"wrong family", h4, rig.A.IPv6, 0, flow.ErrInvalidValue},
		{"no remote", h4, netip.Addr{}, 0, flow.ErrInvalidValue},
		{"unknown handle", flow.MakeHandle(0, 4000), rig.A.IPv4, 0, flow.ErrNoSession},
		{"another app's listener", opc.Handle(), rig.A.IPv4, 0, flow.ErrNotOwner},
		{"another app's session", odc.Handle(), rig.A.IPv4, 0, flow.ErrNotOwner},
	} {
		mtu, err := askPathMTU(cl, c.h, c.remote)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: mtu %d, error %v; want %v", c.name, mtu, err, c.err)
			}
			continue
		}
		if err != nil || mtu != c.mtu {
			t.Errorf("%s: mtu %d, error %v; want %d", c.name, mtu, err, c.mtu)
		}
	}

	// A third app asks about the first's listener.
	third := rawApp(t, d)
	if _, err := askPathMTU(third, h4, rig.A.IPv4); !errors.Is(err, flow.ErrNotOwner) {
		t.Errorf("a third app asks about the first's listener: %v, want ErrNotOwner", err)
	}

	// Not attached.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	bare, err := api.DialClient(ctx2, d.Socket(), api.ClientOptions{Name: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, err := askPathMTU(bare, h4, rig.A.IPv4); !errors.Is(err, flow.ErrNotAttached) {
		t.Errorf("not attached: %v, want ErrNotAttached", err)
	}

	// No datapath: no limit known.
	nd := startDaemon(t)
	ncl := rawApp(t, nd)
	nh := rawBind(t, ncl, "udp://0.0.0.0:0")
	if mtu, err := askPathMTU(ncl, nh, rig.A.IPv4); !errors.Is(err, flow.ErrNotSupported) {
		t.Errorf("without a datapath: mtu %d, error %v; want ErrNotSupported", mtu, err)
	}
}
