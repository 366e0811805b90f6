package daemon

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// askSleepFlags asks cl's daemon for the sleep flags page.
func askSleepFlags(cl *api.Client) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, fds, err := api.Do[*api.SleepFlagsReply](ctx, cl, &api.SleepFlags{})
	if err != nil {
		return -1, err
	}
	return fds[0], nil
}

// TestSleepFlagsPage: an attached app gets the workers' sleep flags page,
// sealed so that it can only read it: it cannot map it writable, write
// it, or change its size. The word of an idle worker is set (it sleeps in
// poll); that of a worker that never sleeps (BusyPoll) stays clear. An
// app not attached is refused the page, and a daemon without a datapath
// has none.
func TestSleepFlagsPage(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	for _, busy := range []bool{false, true} {
		d := startDaemon(t, onB(rig), func(c *Config) { c.Datapath.BusyPoll = busy })
		bare, err := api.DialClient(context.Background(), d.Socket(), api.ClientOptions{Name: "bare"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := askSleepFlags(bare); err == nil {
			t.Fatal("an app not attached got the sleep flags page")
		}
		bare.Close()

		fd, err := askSleepFlags(rawApp(t, d))
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL; seals&want != want {
			t.Fatalf("seals %#x, want %#x", seals, want)
		}
		if m, err := unix.Mmap(fd, 0, api.SleepFlagsSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
			unix.Munmap(m)
			t.Fatal("the page mapped writable")
		}
		if _, err := unix.Pwrite(fd, []byte{0}, 0); err == nil {
			t.Fatal("the page took a write")
		}
		if err := unix.Ftruncate(fd, 0); err == nil {
			t.Fatal("the page shrank")
		}
		mem, err := unix.Mmap(fd, 0, api.SleepFlagsSize, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mem)
		if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_WRITE); err == nil {
			t.Fatal("the read-only mapping was made writable")
		}
		word := api.SleepFlag(mem, 0)
		if busy {
			// Set until the worker's goroutine first runs; clear from
			// then on, as the worker never sleeps.
			deadline := time.Now().Add(5 * time.Second)
			for word.Load() != 0 {
				if time.Now().After(deadline) {
					t.Fatal("busy polling: the worker's sleep flag stayed set")
				}
				time.Sleep(time.Millisecond)
			}
			for range 20 {
				if word.Load() != 0 {
					t.Fatal("busy polling: the worker's sleep flag was set again")
				}
				time.Sleep(5 * time.Millisecond)
			}
		} else {
			deadline := time.Now().Add(5 * time.Second)
			for word.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("an idle worker's sleep flag stayed clear")
				}
				time.Sleep(time.Millisecond)
			}
		}
		d.Close()
	}
	d := startDaemon(t)
	if _, err := askSleepFlags(rawApp(t, d)); !errors.Is(err, flow.ErrNotSupported) {
		t.Fatalf("no datapath: %v, want ErrNotSupported", err)
	}
}

// TestSleepFlagsNoLostKick: an app sends datagrams one at a time, with
// gaps of up to 3 ms that let the worker stop spinning and go to sleep
// (its spin is 120 µs to 2 ms), so that some writes land while it
// announces its sleep. The worker's sleeps are not bounded by a timeout
// that would hide a missed kick (IdleTimeout 30 s): each datagram must
// reach the kernel peer within 2 s, or a kick was lost.
func TestSleepFlagsNoLostKick(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig), func(c *Config) { c.Datapath.IdleTimeout = 30 * time.Second })
	a := attach(t, d, app.Options{Name: "sender"})
	pc, err := a.ListenPacketConn("udp://0.0.0.0:7014")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer := kernelClient(t, rig.A)
	to := netip.AddrPortFrom(rig.A.IPv4, uint16(peer.LocalAddr().(*net.UDPAddr).Port))
	buf := make([]byte, 64)
	for i := range 400 {
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		if _, err := pc.WriteToUDPAddrPort(buf[:8], to); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := peer.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatalf("datagram %d: %v (the worker missed the app's write)", i, err)
		}
	}
}
