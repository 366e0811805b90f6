package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// BenchmarkReassembly9000 measures what the reassembly of a 9,000-byte
// datagram costs beside copying it, where it happens: in the worker of
// B's queue, which reassembles the fragments of datagrams for the ports
// the daemon serves (datapath/fragment.go). A kernel client on host A
// sends 9,000-byte datagrams (seven fragments on the rig's 1,500-byte
// MTU, in order) to an app's PacketConn on B while Linux perf samples
// every CPU. The time spent in reasm.(*Reassembler).Add is divided by the
// datagrams the worker reassembled, and set beside the time the worker
// spends copying the same datagrams into the app's rx fifo
// (udp.(*Target).DeliverBatchMarks) divided by those it delivered: the
// same bytes, copied once more, on the same core. A flat copy of 9,000
// bytes in this process (hot, one core) is reported too, as context; the
// reasm package's benchmarks compare the two copies without the rest of
// the path.
//
// It needs perf (Debian's linux-perf) and the privileges of the netns rig.
// Run the built test binary, whose symbols perf then finds (under `go
// test` it finds none of the binary's), with a count of datagrams large
// enough for perf to sample the reassembly a few hundred times:
//
//	go test -c -o /tmp/daemon.test ./daemon
//	cd daemon && sudo /tmp/daemon.test -test.run x -test.bench Reassembly9000 -test.benchtime 200000x
func BenchmarkReassembly9000(b *testing.B) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Skip("Linux perf is not installed (Debian: linux-perf): it attributes the worker's time")
	}
	rig := nstest.NewPair(b, nstest.Options{})
	d := startDaemon(b, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	})
	a := attach(b, d, app.Options{Name: "reasm", RxFifoSize: 4 << 20, TxFifoSize: 1 << 16, SegmentSize: 32 << 20})
	const size = 9000
	for _, fam := range []struct {
		name, uri, client string
		dst               net.IP
	}{
		{"ipv4", "udp://0.0.0.0:0", "0.0.0.0:0", rig.B.IPv4.AsSlice()},
		{"ipv6", "udp://[::]:0", "[::]:0", rig.B.IPv6.AsSlice()},
	} {
		b.Run(fam.name, func(b *testing.B) {
			pc, err := a.ListenPacket(fam.uri)
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			var got, bad atomic.Int64
			go func() {
				buf := make([]byte, 65536)
				for {
					n, _, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					if n != size {
						bad.Add(1)
					}
					got.Add(1)
				}
			}()
			cli, err := bindKernel(rig.A, fam.client)
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			dst := &net.UDPAddr{IP: fam.dst, Port: pc.LocalAddr().(*net.UDPAddr).Port}
			msg := fragFill(1, size)
			// The first datagram waits for the neighbour; it is not measured.
			waitFor(b, "the first datagram", 5*time.Second, func() bool {
				if got.Load() == 0 {
					_, _ = cli.WriteTo(msg, dst)
					time.Sleep(10 * time.Millisecond)
				}
				return got.Load() > 0
			})
			measured := b.N >= 1000 // the framework's first call (b.N 1) only warms up
			var rec *perfRecord
			if measured {
				if rec, err = startPerfRecord(perf, b.TempDir()); err != nil {
					b.Fatal(err)
				}
			}
			s0 := d.Engine().Stats()
			got0 := got.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := cli.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				// Paced by what the app received, so that no ring or fifo
				// overflows: every datagram sent is reassembled and copied.
				for int64(i)-(got.Load()-got0) > 64 {
					time.Sleep(20 * time.Microsecond)
				}
			}
			waitProgress(b, "datagrams received", 2*time.Second, func() int64 { return got.Load() - got0 }, int64(b.N))
			b.StopTimer()
			var s1 datapath.Stats
			waitFor(b, "the worker's counters", 2*time.Second, func() bool {
				s1 = d.Engine().Stats()
				return s1.Totals.Delivered-s0.Totals.Delivered >= uint64(b.N)
			})
			reasm := s1.Totals.Reassembled - s0.Totals.Reassembled
			copies := s1.Totals.Delivered - s0.Totals.Delivered
			if bad.Load() != 0 {
				b.Fatalf("%d datagrams of another size than %d", bad.Load(), size)
			}
			if !measured {
				return
			}
			prof, err := rec.stop()
			if err != nil {
				b.Fatal(err)
			}
			if reasm < uint64(b.N) || copies < uint64(b.N) {
				b.Fatalf("sent %d: the worker reassembled %d and delivered %d (kernel path %d)", b.N, reasm, copies, s1.KernelRx-s0.KernelRx)
			}
			reasmNs := prof.ns("github.com/xsessiond/xsessiond/datapath/reasm.(*Reassembler).Add") / float64(reasm)
			fifoNs := prof.ns("github.com/xsessiond/xsessiond/datapath/udp.(*Target).DeliverBatchMarks") / float64(copies)
			if reasmNs == 0 || fifoNs == 0 {
				var near []string
				for sym, v := range prof.child {
					if strings.Contains(sym, "xsessiond") && v > 0.001 {
						near = append(near, fmt.Sprintf("%s %.2f%%", sym, 100*v))
					}
				}
				b.Fatalf("no samples in the reassembly or the fifo's copy (%s); the daemon's functions sampled: %v", prof.file, near)
			}
			flatNs := flatCopyNs(size)
			b.ReportMetric(reasmNs, "reasm-ns/datagram")
			b.ReportMetric(fifoNs, "fifo-ns/datagram")
			b.ReportMetric(flatNs, "memmove-ns/datagram")
			b.ReportMetric(reasmNs/fifoNs, "reasm/fifo")
			b.ReportMetric(reasmNs/flatNs, "reasm/memmove")
		})
	}
}

// flatCopyNs returns the time one copy of size bytes takes in this
// process, source and destination hot.
func flatCopyNs(size int) float64 {
	src, dst := make([]byte, size), make([]byte, size)
	const n = 100000
	start := time.Now()
	for range n {
		copy(dst, src)
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

// perfRecord is a running `perf record` of every CPU with call chains.
type perfRecord struct {
	cmd      *exec.Cmd
	file     string
	out      bytes.Buffer
	perfPath string
}

func startPerfRecord(perf, dir string) (*perfRecord, error) {
	r := &perfRecord{file: dir + "/perf.data", perfPath: perf}
	r.cmd = exec.Command(perf, "record", "-a", "-g", "-e", "cpu-clock", "-F", "4999", "-o", r.file)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond) // perf is sampling once its output names the file; a fixed wait is simpler
	return r, nil
}

// perfProfile is the time perf attributed to each kernel function with
// what it called ("children"), in ns.
type perfProfile struct {
	file  string
	total float64            // ns sampled
	child map[string]float64 // share of total, 0 to 1
}

func (p *perfProfile) ns(sym string) float64 { return p.child[sym] * p.total }

// stop ends the recording and reads the profile.
func (r *perfRecord) stop() (*perfProfile, error) {
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	// perf ends on SIGINT with that signal as its status, having written
	// its file.
	if err := r.cmd.Wait(); err != nil && !strings.Contains(r.out.String(), "Captured and wrote") {
		return nil, fmt.Errorf("perf record: %v: %s", err, r.out.String())
	}
	out, err := exec.Command(r.perfPath, "report", "-i", r.file, "--children", "--stdio", "--sort", "sym", "-g", "none",
		"--percent-limit", "0").Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %v", err)
	}
	p := &perfProfile{file: r.file, child: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# Event count (approx.): "); ok {
			p.total, _ = strconv.ParseFloat(strings.TrimSpace(rest), 64) // cpu-clock counts ns
			continue
		}
		// "    12.34%     0.56%  [k] ip_defrag" ([.]: this process)
		f := strings.Fields(line)
		if len(f) < 4 || (f[2] != "[k]" && f[2] != "[.]") || !strings.HasSuffix(f[0], "%") {
			continue
		}
		c, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err == nil {
			p.child[f[3]] += c / 100
		}
	}
	if p.total == 0 {
		return nil, fmt.Errorf("perf report of %s: no event count", r.file)
	}
	return p, nil
}
