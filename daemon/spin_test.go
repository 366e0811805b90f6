package daemon

import (
	"bytes"
	"errors"
	"fmt"
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
