package daemon

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
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
	offC, offS := run(-1)
	onC, onS := run(0)
	t.Logf("no spin: client %+v, echo %+v", offC, offS)
	t.Logf("spin:    client %+v, echo %+v", onC, onS)
	if offC.Spins != 0 || offS.Spins != 0 {
		t.Errorf("ReadSpin -1 spun")
	}
	off, on := offC.Sleeps+offS.Sleeps, onC.Sleeps+onS.Sleeps
	if off < rounds {
		t.Errorf("without the spin the apps slept %d times in %d round trips: the test does not make them wait for each other", off, rounds)
	}
	if onC.SpinHits == 0 || onS.SpinHits == 0 || on*4 > off {
		t.Errorf("with the spin the apps slept %d times (spin hits %d and %d), without it %d", on, onC.SpinHits, onS.SpinHits, off)
	}
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
