package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc/stat: USER_HZ, 100 on every Linux
// architecture Go supports (the kernel fixes it for the ABI).
const userHZ = 100

// errProcStat is returned for /proc/stat content that cannot be read.
var errProcStat = errors.New("perf: bad /proc/stat")

// CPUTimes is the aggregate "cpu" line of /proc/stat, in USER_HZ ticks
// summed over all CPUs. Guest time is already inside User and Nice.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Busy is the time spent doing anything but idling or waiting for I/O:
// user+nice+system+irq+softirq+steal.
func (c CPUTimes) Busy() uint64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
}

// Total is Busy plus idle and iowait.
func (c CPUTimes) Total() uint64 { return c.Busy() + c.Idle + c.IOWait }

// ParseProcStat reads the aggregate cpu line of a /proc/stat.
func ParseProcStat(r io.Reader) (CPUTimes, error) { return parseProcStatLine(r, "cpu") }

// parseProcStatLine reads the line of a /proc/stat named name: "cpu" for
// the aggregate, "cpuN" for CPU N.
func parseProcStatLine(r io.Reader, name string) (CPUTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != name {
			continue
		}
		if len(f) < 9 {
			return CPUTimes{}, fmt.Errorf("%w: %s line has %d fields", errProcStat, name, len(f)-1)
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("%w: %s field %d: %v", errProcStat, name, i+1, err)
			}
			v[i] = n
		}
		return CPUTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, nil
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return CPUTimes{}, fmt.Errorf("%w: no %s line", errProcStat, name)
}

// ReadCPUTimes reads /proc/stat.
func ReadCPUTimes() (CPUTimes, error) { return readProcStatLine("cpu") }

// ReadCPUTime reads CPU cpu's line of /proc/stat.
func ReadCPUTime(cpu int) (CPUTimes, error) { return readProcStatLine("cpu" + strconv.Itoa(cpu)) }

func readProcStatLine(name string) (CPUTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	defer f.Close()
	return parseProcStatLine(f, name)
}

// BusyBetween is the machine's busy CPU time from a to b. Counters that went
// backwards (they should not) are an error rather than a huge number.
func BusyBetween(a, b CPUTimes) (time.Duration, error) {
	ba, bb := a.Busy(), b.Busy()
	if bb < ba || b.Total() < a.Total() {
		return 0, fmt.Errorf("%w: counters went backwards", errProcStat)
	}
	return ticks(bb - ba), nil
}

// Utilisation is the busy share of all CPUs from a to b, 0..1.
func Utilisation(a, b CPUTimes) float64 {
	dt := b.Total() - a.Total()
	if b.Total() <= a.Total() || b.Busy() < a.Busy() {
		return 0
	}
	return float64(b.Busy()-a.Busy()) / float64(dt)
}

func ticks(n uint64) time.Duration { return time.Duration(n) * (time.Second / userHZ) }

// PerPacket divides busy time over n packets, in nanoseconds; 0 packets
// gives 0 and false.
func PerPacket(busy time.Duration, n uint64) (float64, bool) {
	if n == 0 {
		return 0, false
	}
	return float64(busy.Nanoseconds()) / float64(n), true
}

// ReceiverCost is the CPU time per delivered packet once the generator's
// own cost is taken out: (busy − genPerSent×sent) / delivered. genPerSent is
// the generator-alone cost per sent packet in ns. A result below zero means
// the subtraction is inside the noise; it is reported as is.
func ReceiverCost(busy time.Duration, sent, delivered uint64, genPerSent float64) (float64, bool) {
	if delivered == 0 {
		return 0, false
	}
	return (float64(busy.Nanoseconds()) - genPerSent*float64(sent)) / float64(delivered), true
}

// procCPU is this process's user+system time (all threads) so far.
func procCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
