package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// BenchmarkReassembly9000 measures what the reassembly of a 9,000-byte
// datagram costs beside copying it, where it happens: in B's kernel,
// which reassembles the fragments of datagrams for the ports the daemon
// serves and hands each whole to the daemon's socket for the port (see
// datapath/kernelpath.go). A kernel client on host A sends 9,000-byte
// datagrams (seven fragments on the rig's 1,500-byte MTU) to an app's
// PacketConn on B while Linux perf samples every CPU; the time spent in
// the reassembly (ip_defrag for IPv4, ipv6_frag_rcv for IPv6, with what
// they call) is divided by the datagrams the kernel reassembled
// (ReasmOKs), and set beside the time the kernel spends copying the same
// datagrams into the daemon's buffer (skb_copy_datagram_iter, the recvmsg
// of the daemon's socket) divided by the datagrams the daemon read. A
// flat copy of 9,000 bytes in this process (hot, one core) is reported
// too, as context.
//
// It needs perf (Debian's linux-perf) and the privileges of the netns rig;
// run it with a count of datagrams:
//
//	go test -exec sudo ./daemon -run x -bench Reassembly9000 -benchtime 40000x
func BenchmarkReassembly9000(b *testing.B) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Skip("Linux perf is not installed (Debian: linux-perf): it attributes the kernel's time")
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
		reasm             string // the function that reassembles
		snmp, field       string // where the kernel counts what it reassembled
	}{
		{"ipv4", "udp://0.0.0.0:0", "0.0.0.0:0", rig.B.IPv4.AsSlice(), "ip_defrag", "/proc/thread-self/net/snmp", "ReasmOKs"},
		{"ipv6", "udp://[::]:0", "[::]:0", rig.B.IPv6.AsSlice(), "ipv6_frag_rcv", "/proc/thread-self/net/snmp6", "Ip6ReasmOKs"},
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
			reasm0 := snmpCounter(b, rig.B, fam.snmp, fam.field)
			rx0 := d.Engine().Stats().KernelRx
			got0 := got.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := cli.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				// Paced by what the app received, so that no socket
				// buffer overflows: every datagram sent is reassembled
				// and copied.
				for int64(i)-(got.Load()-got0) > 64 {
					time.Sleep(20 * time.Microsecond)
				}
			}
			waitProgress(b, "datagrams received", 2*time.Second, func() int64 { return got.Load() - got0 }, int64(b.N))
			b.StopTimer()
			reasm := snmpCounter(b, rig.B, fam.snmp, fam.field) - reasm0
			copies := d.Engine().Stats().KernelRx - rx0
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
				b.Fatalf("sent %d: the kernel reassembled %d, the daemon read %d", b.N, reasm, copies)
			}
			// The kernel copies a datagram to the socket's reader with
			// skb_copy_datagram_iter, or, when the UDP checksum is still
			// to verify (as for a reassembled datagram), while it sums it.
			reasmNs := prof.ns(fam.reasm) / float64(reasm)
			kcopyNs := (prof.ns("skb_copy_datagram_iter") + prof.ns("skb_copy_and_csum_datagram_msg")) / float64(copies)
			fifoNs := prof.ns("github.com/xsessiond/xsessiond/datapath/udp.(*Target).DeliverBatchMarks") / float64(copies)
			if reasmNs == 0 || kcopyNs == 0 || fifoNs == 0 {
				b.Fatalf("no samples in %s, the kernel's copy or the fifo's (%s): a profile without call chains?", fam.reasm, prof.file)
			}
			flatNs := flatCopyNs(size)
			b.ReportMetric(reasmNs, "reasm-ns/datagram")
			b.ReportMetric(kcopyNs, "kcopy-ns/datagram")
			b.ReportMetric(fifoNs, "fifo-ns/datagram")
			b.ReportMetric(flatNs, "memmove-ns/datagram")
			b.ReportMetric(reasmNs/kcopyNs, "reasm/kcopy")
			b.ReportMetric(reasmNs/fifoNs, "reasm/fifo")
			b.ReportMetric(reasmNs/flatNs, "reasm/memmove")
		})
	}
}

// snmpCounter reads one counter of h's namespace from file (/proc's
// snmp: a header line of names then a line of values; snmp6: name value
// lines).
func snmpCounter(b *testing.B, h *nstest.Host, file, name string) uint64 {
	b.Helper()
	var v uint64
	if err := h.Do(func() error {
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		lines := strings.Split(string(raw), "\n")
		for i, line := range lines {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == name {
				v, err = strconv.ParseUint(f[1], 10, 64)
				return err
			}
			if i+1 < len(lines) && len(f) > 1 && f[0] == "Ip:" {
				vals := strings.Fields(lines[i+1])
				for j, n := range f {
					if n == name && j < len(vals) {
						v, err = strconv.ParseUint(vals[j], 10, 64)
						return err
					}
				}
			}
		}
		return fmt.Errorf("%s: no counter %s", file, name)
	}); err != nil {
		b.Fatal(err)
	}
	return v
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
