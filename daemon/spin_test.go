package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

// TestReadSpinOneCPU runs a cut-through echo with both apps on one CPU,
// with the read spin and without: with it, a read that found nothing
// yields the CPU to its peer, finds the answer and does not sleep, so the
// reads sleep far less often.
func TestReadSpinOneCPU(t *testing.T) {
	restore := pinProcess(t)
	defer restore()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	const rounds = 2000
	run := func(spin time.Duration) (cli, srv app.ReadStats) {
		d := startDaemon(t)
		s, c, conn := echoApps(t, d, app.Options{ReadSpin: spin})
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64)
		for i := range rounds {
			msg := []byte(strconv.Itoa(i))
			if _, err := conn.Write(msg); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("echo %d: %q", i, buf[:n])
			}
		}
		return c.ReadStats(), s.ReadStats()
	}
	// A yield that another busy process on the CPU holds for long ends
	// the spin (SpinsStolen), as it should (TestSpinnerStolen in package
	// app): the other packages' tests running at the same time made
	// every attempt meet such yields. Here they are out of reach, and up
	// to five attempts are made; one must show the spin at work.
	testhook.SpinStolenAt.Store(int64(time.Hour))
	defer testhook.SpinStolenAt.Store(0)
	var fails []string
	for attempt := 1; attempt <= 5; attempt++ {
		offC, offS := run(-1)
		onC, onS := run(0)
		t.Logf("attempt %d: no spin: client %+v, echo %+v", attempt, offC, offS)
		t.Logf("attempt %d: spin:    client %+v, echo %+v", attempt, onC, onS)
		if offC.Spins != 0 || offS.Spins != 0 {
			t.Fatalf("ReadSpin -1 spun")
		}
		off, on := offC.Sleeps+offS.Sleeps, onC.Sleeps+onS.Sleeps
		if off < rounds {
			t.Fatalf("without the spin the apps slept %d times in %d round trips: the test does not make them wait for each other", off, rounds)
		}
		if onC.SpinHits > 0 && onS.SpinHits > 0 && on*4 <= off {
			return
		}
		fails = append(fails, fmt.Sprintf("attempt %d: with the spin the apps slept %d times (spin hits %d and %d, stolen yields %d and %d), without it %d",
			attempt, on, onC.SpinHits, onS.SpinHits, onC.SpinsStolen, onS.SpinsStolen, off))
	}
	t.Fatal(strings.Join(fails, "; "))
}

// pinProcess moves every thread of the test process to the first CPU it
// may run on until the returned function puts them back.
func pinProcess(t *testing.T) func() {
	t.Helper()
	var was, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !was.IsSet(cpu) {
		cpu++
	}
	one.Set(cpu)
	set := func(s *unix.CPUSet) error {
		for range 3 { // threads started meanwhile
			ents, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			for _, e := range ents {
				tid, _ := strconv.Atoi(e.Name())
				if err := unix.SchedSetaffinity(tid, s); err != nil && !errors.Is(err, unix.ESRCH) {
					return err
				}
			}
		}
		return nil
	}
	if err := set(&one); err != nil {
		t.Fatalf("pin to CPU %d: %v", cpu, err)
	}
	return func() {
		if err := set(&was); err != nil {
			t.Errorf("unpin: %v", err)
		}
	}
}

// TestTCPWireReadNoSpin: the reads of a TCP session over the datapath
// sleep without spinning (app: end.spinsFor), while the reads of a UDP
// session of the same app, waiting as long, spin. A kernel client on host
// A sends a request every 2 ms, so that each read of the app finds nothing
// first.
func TestTCPWireReadNoSpin(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "spin"})
	ln := listenEcho(t, a, "tcp://0.0.0.0:7100")
	defer ln.Close()

	const rounds = 50
	exchange := func(network string, port uint16) {
		t.Helper()
		err := rig.A.Do(func() error {
			c, err := net.DialTimeout(network, netip.AddrPortFrom(rig.B.IPv4, port).String(), 15*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 8)
			for i := range rounds {
				msg := []byte(fmt.Sprintf("%08d", i))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(msg); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					return fmt.Errorf("round %d: %w", i, err)
				}
				if !bytes.Equal(buf, msg) {
					return fmt.Errorf("round %d: %q back for %q", i, buf, msg)
				}
				time.Sleep(2 * time.Millisecond)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s echo: %v", network, err)
		}
	}

	exchange("tcp", 7100)
	st := a.ReadStats()
	t.Logf("after the TCP rounds: %+v", st)
	if st.Sleeps < rounds/2 {
		t.Fatalf("the TCP server's reads slept %d times in %d requests 2 ms apart: they did not wait", st.Sleeps, rounds)
	}
	if st.Spins != 0 {
		t.Fatalf("the reads of a TCP session over the datapath spun %d times (%+v)", st.Spins, st)
	}

	// The UDP server's reads start now: an idle one spins too.
	pc := echoServer(t, a, 7101)
	defer pc.Close()
	exchange("udp", 7101)
	st = a.ReadStats()
	t.Logf("after the UDP rounds: %+v", st)
	if st.Spins == 0 {
		t.Fatalf("the reads of a UDP session did not spin either (%+v): the test sees no spin at all", st)
	}
}
