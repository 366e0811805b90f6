package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// TestBrokenUDPConnReadsSleepThrough: a UDP session with another app whose
// peer broke the session's rx fifo (its indices say there is more than
// the fifo holds) reports the reset once, and a read that waits on it
// after is woken by nothing its app's other traffic brings: the app's
// reads sleep about once a round trip of its healthy session. Before,
// every wake-up of the app woke each such read too, which found nothing
// and slept again (8 broken reads: about 9 sleeps a round trip).
func TestBrokenUDPConnReadsSleepThrough(t *testing.T) {
	if raceEnabled {
		t.Skip("writes the daemon's mapping of a segment the app maps too")
	}
	d := startDaemon(t)
	hostile := attach(t, d, app.Options{Name: "hostile"})
	hpc, err := hostile.ListenPacket("udp://127.0.0.1:7941")
	if err != nil {
		t.Fatal(err)
	}
	defer hpc.Close()
	echo := attach(t, d, app.Options{Name: "echo"})
	epc, err := echo.ListenPacket("udp://127.0.0.1:7942")
	if err != nil {
		t.Fatal(err)
	}
	defer epc.Close()
	go echoPackets(epc)
	victim := attach(t, d, app.Options{Name: "victim", ReadSpin: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const broken = 8
	var conns []net.Conn
	for range broken {
		c, err := victim.Dial(ctx, "udp://127.0.0.1:7941")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for _, p := range appSessions(t, d, "victim") { // the eight: their rx fifos the hostile app writes
		fifotest.SetTail(p.Rx, fifotest.Head(p.Rx)+1<<30)
	}
	buf := make([]byte, 2048)
	var wg sync.WaitGroup
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("the first read of a broken session: %v, want ECONNREFUSED", err)
		}
		c.SetReadDeadline(time.Now().Add(time.Minute))
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 2048)
			_, err := c.Read(b) // until the test closes it
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("a waiting read of a broken session: %v", err)
			}
		}()
	}
	good, err := victim.Dial(ctx, "udp://127.0.0.1:7942")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	time.Sleep(100 * time.Millisecond) // the broken reads asleep
	const rounds = 2000
	before := victim.ReadStats().Sleeps
	good.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range rounds {
		if _, err := good.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if n, err := good.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("round %d: %q %v", i, buf[:n], err)
		}
	}
	sleeps := victim.ReadStats().Sleeps - before
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	t.Logf("%d round trips beside %d broken sessions' waiting reads: %d read sleeps", rounds, broken, sleeps)
	if sleeps > 3*rounds {
		t.Fatalf("%d read sleeps in %d round trips: the broken sessions' reads were woken by the app's other traffic", sleeps, rounds)
	}
}
