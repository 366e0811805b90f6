package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// churnRig is a daemon on host B of a two-host rig, with its socket in a
// temporary directory; both are removed when the test ends.
func churnRig(t *testing.T) (*nstest.Pair, *daemon.Daemon) {
	t.Helper()
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(daemon.Config{
		Datapath: datapath.Config{IfName: rig.B.Link, NetnsName: rig.B.Name},
		Socket:   filepath.Join(t.TempDir(), "api.sock"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return rig, d
}

func churnAttach(t *testing.T, d *daemon.Daemon, name string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: d.Socket(), Name: name, Scope: flow.ScopeGlobal | flow.ScopeLocal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// daemonBooks is what `ctl show apps` says of app id: its sessions, the
// ended ones it has not closed, and the size of the fifos the daemon
// keeps in its books for it.
type daemonBooks struct {
	Sessions, Ended int
	FifoSize        uint64
}

func showApp(t *testing.T, d *daemon.Daemon, id uint32) daemonBooks {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "show"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w, _ := api.ParseShowWhat("apps")
	m, fds, err := cl.Call(ctx, &api.Show{What: w})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	var apps []struct {
		ID       uint32 `json:"id"`
		Sessions int    `json:"sessions"`
		Ended    int    `json:"ended_sessions"`
		FifoSize uint64 `json:"fifo_size_bytes"`
	}
	if err := json.Unmarshal(m.(*api.ShowReply).JSON, &apps); err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.ID == id {
			return daemonBooks{a.Sessions, a.Ended, a.FifoSize}
		}
	}
	t.Fatalf("app %d not shown", id)
	return daemonBooks{}
}

// churnBooks runs round n times and returns the books of apps (theirs
// and the daemon's) once things settled: every session of the daemon
// but keep ended.
func churnBooks(t *testing.T, d *daemon.Daemon, apps []*app.App, keep, n int, round func(i int) error) ([]app.Books, []daemonBooks) {
	t.Helper()
	for i := range n {
		if err := round(i); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	var ab []app.Books
	var db []daemonBooks
	deadline := time.Now().Add(10 * time.Second)
	for {
		ab, db = ab[:0], db[:0]
		sessions := 0
		for _, a := range apps {
			ab = append(ab, a.Books())
			b := showApp(t, d, a.Index())
			db = append(db, b)
			sessions += b.Sessions
		}
		if sessions <= keep || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the last events and requests
	ab, db = ab[:0], db[:0]
	for _, a := range apps {
		ab = append(ab, a.Books())
		db = append(db, showApp(t, d, a.Index()))
	}
	return ab, db
}

// checkNoGrowth fails when the books after many rounds have grown by
// more than slack over those after the warm-up.
func checkNoGrowth(t *testing.T, rounds int, warm, after []app.Books, dwarm, dafter []daemonBooks) {
	t.Helper()
	slack := rounds / 4
	for i := range warm {
		t.Logf("app %d: after warm-up %+v %+v; after %d more rounds %+v %+v", i, warm[i], dwarm[i], rounds, after[i], dafter[i])
		w, a := warm[i], after[i]
		for _, f := range []struct {
			name      string
			was, more int
		}{
			{"owners", w.Owners, a.Owners}, {"goneEarly", w.GoneEarly, a.GoneEarly}, {"closing", w.Closing, a.Closing},
			{"localOf", w.LocalOf, a.LocalOf}, {"dials", w.Dials, a.Dials}, {"parked", w.Parked, a.Parked},
			{"objects", w.Objects, a.Objects}, {"acceptors", w.Acceptors, a.Acceptors}, {"waiters", w.Waiters, a.Waiters},
			{"daemon sessions", dwarm[i].Sessions, dafter[i].Sessions}, {"daemon ended sessions", dwarm[i].Ended, dafter[i].Ended},
		} {
			if f.more-f.was > slack {
				t.Errorf("app %d: %s grew from %d to %d in %d rounds", i, f.name, f.was, f.more, rounds)
			}
		}
	}
}

// TestChurnLeavesNoBooks: a server attached for long sees sessions come
// and go in every way; what the App and the daemon keep of them does not
// grow with their number. Each churn runs a warm-up, then many more
// rounds, and the App's maps and the daemon's session counts must be
// where they were after the warm-up.
func TestChurnLeavesNoBooks(t *testing.T) {
	rig, d := churnRig(t)
	const warmup, rounds = 20, 200
	kernelDial := func(port int) (net.Conn, error) {
		var c net.Conn
		err := rig.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, uint16(port)).String(), 5*time.Second)
			return err
		})
		return c, err
	}
	resetConn := func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	// serve accepts every session of ln and hands it to fn, closed after.
	serve := func(ln net.Listener, fn func(c net.Conn)) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c)
			}()
		}
	}
	readToEnd := func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	}
	run := func(t *testing.T, apps []*app.App, keep int, round func(i int) error) {
		t.Helper()
		w, dw := churnBooks(t, d, apps, keep, warmup, round)
		a, da := churnBooks(t, d, apps, keep, rounds, round)
		checkNoGrowth(t, rounds, w, a, dw, da)
	}

	t.Run("accepted, reset by peer", func(t *testing.T) {
		a := churnAttach(t, d, "srv")
		ln, err := a.Listen("tcp://0.0.0.0:7601")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan net.Conn, 1)
		go serve(ln, func(c net.Conn) {
			got <- c
			readToEnd(c)
		})
		run(t, []*app.App{a}, 0, func(int) error {
			k, err := kernelDial(7601)
			if err != nil {
				return err
			}
			<-got
			resetConn(k)
			return nil
		})
	})
	t.Run("reset or closed before Accept", func(t *testing.T) {
		a := churnAttach(t, d, "srv")
		ln, err := a.Listen("tcp://0.0.0.0:7602")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{}, 1)
		go serve(ln, func(c net.Conn) {
			readToEnd(c)
			done <- struct{}{}
		})
		run(t, []*app.App{a}, 0, func(i int) error {
			k, err := kernelDial(7602)
			if err != nil {
				return err
			}
			if i%2 == 0 {
				resetConn(k)
			} else {
				k.Close()
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				return errors.New("no accept")
			}
			return nil
		})
	})
	t.Run("reset or closed before a late Accept", func(t *testing.T) {
		a := churnAttach(t, d, "srv")
		ln, err := a.Listen("tcp://0.0.0.0:7608")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		run(t, []*app.App{a}, 0, func(i int) error {
			k, err := kernelDial(7608)
			if err != nil {
				return err
			}
			switch i % 3 {
			case 0:
				resetConn(k)
			case 1:
				k.Close()
			case 2:
				k.Write([]byte("data"))
				resetConn(k)
			}
			time.Sleep(5 * time.Millisecond)
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			if i%2 == 0 {
				readToEnd(c)
			}
			return c.Close()
		})
	})
	t.Run("queued when the listener closes", func(t *testing.T) {
		a := churnAttach(t, d, "srv")
		run(t, []*app.App{a}, 0, func(i int) error {
			ln, err := a.Listen("tcp://0.0.0.0:7603")
			if err != nil {
				return err
			}
			var ks []net.Conn
			for j := range 3 {
				k, err := kernelDial(7603)
				if err != nil {
					ln.Close()
					return err
				}
				switch j {
				case 1:
					resetConn(k)
				case 2:
					k.Close()
				default:
					ks = append(ks, k)
				}
			}
			l := ln.(*app.Listener)
			for end := time.Now().Add(5 * time.Second); l.QueueLen() < 3 && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(time.Duration(i%3) * time.Millisecond)
			ln.Close()
			for _, k := range ks {
				k.Close()
			}
			return nil
		})
	})
	t.Run("dial cancelled", func(t *testing.T) {
		var kl net.Listener
		if err := rig.A.Do(func() (err error) {
			kl, err = net.Listen("tcp", ":7604")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer kl.Close()
		go serve(kl, readToEnd)
		a := churnAttach(t, d, "cli")
		rnd := rand.New(rand.NewPCG(1, 2))
		uri := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7604).String()
		ok := 0
		run(t, []*app.App{a}, 0, func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rnd.IntN(1500))*time.Microsecond)
			defer cancel()
			c, err := a.Dial(ctx, uri)
			if err == nil {
				ok++
				c.Close()
			}
			return nil
		})
		t.Logf("%d dials of %d connected", ok, warmup+rounds)
	})
	t.Run("dial refused", func(t *testing.T) {
		a := churnAttach(t, d, "cli")
		uri := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7605).String()
		run(t, []*app.App{a}, 0, func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := a.Dial(ctx, uri)
			if err == nil {
				c.Close()
				return errors.New("dial of a closed port succeeded")
			}
			return nil
		})
	})
	t.Run("cut-through", func(t *testing.T) {
		srv := churnAttach(t, d, "srv")
		cli := churnAttach(t, d, "cli")
		ln, err := srv.Listen("tcp://127.0.0.1:7606")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go serve(ln, func(c net.Conn) {
			accepted <- c
			readToEnd(c)
		})
		run(t, []*app.App{srv, cli}, 0, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := cli.Dial(ctx, "tcp://127.0.0.1:7606")
			if err != nil {
				return err
			}
			s := <-accepted
			switch i % 3 {
			case 0:
				c.Close()
			case 1:
				c.(*app.Conn).SetLinger(0)
				c.Close()
			case 2:
				s.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}
			return nil
		})
	})
	t.Run("cut-through dial cancelled", func(t *testing.T) {
		srv := churnAttach(t, d, "srv")
		cli := churnAttach(t, d, "cli")
		ln, err := srv.Listen("tcp://127.0.0.1:7609")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go serve(ln, readToEnd)
		pc, err := srv.ListenPacket("udp://127.0.0.1:7610")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			b := make([]byte, 100)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo(b[:n], from)
			}
		}()
		rnd := rand.New(rand.NewPCG(3, 4))
		ok := 0
		run(t, []*app.App{srv, cli}, 0, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rnd.IntN(300))*time.Microsecond)
			defer cancel()
			uri := "tcp://127.0.0.1:7609"
			if i%2 == 1 {
				uri = "udp://127.0.0.1:7610"
			}
			c, err := cli.Dial(ctx, uri)
			if err != nil {
				return nil
			}
			ok++
			if i%2 == 1 {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("ping"))
				c.Read(make([]byte, 10))
			}
			return c.Close()
		})
		peers, _ := pc.(*app.PacketConn).Books()
		t.Logf("%d dials of %d connected; the PacketConn holds %d peers", ok, warmup+rounds, peers)
		if peers > 1 {
			t.Errorf("the PacketConn holds %d peers gone", peers)
		}
	})
	t.Run("udp to many remotes", func(t *testing.T) {
		a := churnAttach(t, d, "udp")
		pc, err := a.ListenPacket("udp://0.0.0.0:7607")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		p := pc.(*app.PacketConn)
		p.SetDontFragment(true)
		buf := make([]byte, 1000)
		for i := range 3000 {
			to := &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 10000 + i}
			if _, err := pc.WriteTo(buf, to); err != nil {
				t.Fatalf("write to %v: %v", to, err)
			}
			to = &net.UDPAddr{IP: net.ParseIP("10.77.0." + strconv.Itoa(3+i%250)), Port: 10000 + i}
			pc.WriteTo(buf, to)
		}
		peers, pmtu := p.Books()
		t.Logf("peers %d, path MTUs cached %d", peers, pmtu)
		if pmtu > 1024 {
			t.Errorf("%d path MTUs cached", pmtu)
		}
	})
}
