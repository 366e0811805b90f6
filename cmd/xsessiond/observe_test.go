package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// echoRig is the built daemon on host B of a two-host rig with the echo
// example listening on udp port 9000, and its control socket.
type echoRig struct {
	rig     *nstest.Pair
	xs      string // the xsessiond binary
	sock    string
	metrics string // host:port of /metrics
	daemon  *process
}

func startEchoRig(t testing.TB) *echoRig {
	t.Helper()
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, echo := binaries(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.Addr().String()
	l.Close()
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock, "--metrics-addr", maddr)
	waitSocket(t, sock, 15*time.Second)
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	return &echoRig{rig: rig, xs: xs, sock: sock, metrics: maddr, daemon: d}
}

// ctl runs the built CLI against the rig's daemon.
func (r *echoRig) ctl(args ...string) (string, error) {
	out, err := exec.Command(r.xs, append([]string{"ctl", "--socket", r.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// echo sends n datagrams of size bytes from a kernel socket on host A and
// waits for their echoes; it returns the payloads sent and how many came
// back.
func (r *echoRig) echo(t testing.TB, n, size int) (sent [][]byte, back int) {
	t.Helper()
	err := r.rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.rig.B.IPv4, 9000)))
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := range n {
			msg := []byte(fmt.Sprintf("%06d:", i) + strings.Repeat("x", max(size-7, 0)))
			for try := 0; try < 3; try++ {
				if _, err := c.Write(msg); err != nil {
					return err
				}
				sent = append(sent, msg)
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(buf); err == nil {
					back++
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sent, back
}

func (r *echoRig) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestObserveRig checks what the daemon shows of a datapath under echo
// traffic: every --json document's keys and handles, the drop reasons and
// XDP counters of the stats table, and /metrics against promlint.
func TestObserveRig(t *testing.T) {
	r := startEchoRig(t)
	if _, back := r.echo(t, 200, 100); back < 200 {
		t.Fatalf("%d of 200 echoes came back", back)
	}
	docs := checkShowJSON(t, r.ctl)
	st := docs["stats"].(map[string]any)
	xdp, _ := st["xdp"].(map[string]any)
	if xdp["redirect"] == nil || xdp["redirect"].(float64) < 200 {
		t.Errorf("stats xdp: %v", xdp)
	}
	out, err := r.ctl("show", "stats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "xdp program") || !strings.Contains(out, "redirect=") || !strings.Contains(out, "QUEUE") {
		t.Errorf("stats table:\n%s", out)
	}
	out, err = r.ctl("top", "--once", "--interval", "200ms")
	if err != nil || !strings.Contains(out, "QUEUE") || !strings.Contains(out, "udpecho") || !strings.Contains(out, "redirect") {
		t.Errorf("top --once: %v\n%s", err, out)
	}
	body := r.scrape(t)
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// Per-listener figures, then cleared.
	var ls []daemon.ListenerView
	out, err = r.ctl("show", "listeners", "--json", "--ns", "default")
	if err != nil || json.Unmarshal([]byte(out), &ls) != nil || len(ls) == 0 {
		t.Fatalf("show listeners: %v\n%s", err, out)
	}
	var rx, tx, rxb uint64
	for _, l := range ls {
		rx, tx, rxb = rx+l.RxPackets, tx+l.TxPackets, rxb+l.RxBytes
	}
	if rx < 200 || tx < 200 || rxb < 200*100 {
		t.Errorf("listener counters rx %d (%d bytes) tx %d after 200 echoes of 100 bytes:\n%s", rx, rxb, tx, out)
	}
	if out, err := r.ctl("clear", "stats"); err != nil {
		t.Fatalf("clear stats: %v %s", err, out)
	}
	out, err = r.ctl("show", "listeners", "--json")
	if err != nil || json.Unmarshal([]byte(out), &ls) != nil {
		t.Fatalf("show listeners: %v\n%s", err, out)
	}
	for _, l := range ls {
		if l.RxPackets != 0 || l.TxPackets != 0 || l.RxBytes != 0 {
			t.Errorf("listener %v after clear stats: %+v", l.Handle, l.Counters)
		}
	}
	var sv daemon.StatsView
	out, err = r.ctl("show", "stats", "--json")
	if err != nil || json.Unmarshal([]byte(out), &sv) != nil {
		t.Fatalf("show stats: %v\n%s", err, out)
	}
	if len(sv.Queues) == 0 || sv.Queues[0].RxPackets != 0 || sv.XDP["redirect"] != 0 {
		t.Errorf("stats after clear stats: queues %+v xdp %v", sv.Queues, sv.XDP)
	}
	if _, back := r.echo(t, 10, 50); back < 10 {
		t.Fatalf("%d of 10 echoes came back", back)
	}
	out, err = r.ctl("show", "stats", "--json")
	if err != nil || json.Unmarshal([]byte(out), &sv) != nil {
		t.Fatalf("show stats: %v\n%s", err, out)
	}
	if sv.Totals.RxPackets < 10 || sv.Totals.RxPackets > 40 {
		t.Errorf("rx after clear stats and 10 echoes: %d", sv.Totals.RxPackets)
	}
	body = r.scrape(t)
	for _, m := range []string{`xsessiond_xdp_packets_total{counter="redirect"}`, `xsessiond_queue_rx_packets_total{queue="0"}`, "xsessiond_build_info{"} {
		if !strings.Contains(body, m) {
			t.Errorf("no %s in the metrics", m)
		}
	}
}

// waitFile waits until path has at least n bytes.
func waitFile(t testing.TB, path string, n int64) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s did not reach %d bytes", path, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readCapture reads a pcapng file's frames: their UDP payloads and
// directions (inbound or not).
func readCapture(t *testing.T, path string) (payloads [][]byte, inbound []bool, comments []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, _, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("frame %d is not UDP: %v", len(payloads), p)
		}
		payloads = append(payloads, append([]byte(nil), u.Payload...))
		inbound = append(inbound, opts.Flags != nil && opts.Flags.Direction == pcapgo.NgEpbFlagDirectionInbound)
		c := ""
		if len(opts.Comments) > 0 {
			c = opts.Comments[0]
		}
		comments = append(comments, c)
	}
	return payloads, inbound, comments
}

// TestCaptureDaemonStops: a capture that ends at its --duration exits 0;
// one the daemon ends as it stops, before -c or --duration, exits 1
// saying so, its file holding what came.
func TestCaptureDaemonStops(t *testing.T) {
	_, sock, d := startRigDaemon(t)
	xs, _ := binaries(t)
	if out, err := exec.Command(xs, "ctl", "--socket", sock, "capture", "--duration", "300ms", "-w", os.DevNull).CombinedOutput(); err != nil {
		t.Fatalf("capture --duration 300ms: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "c.pcapng")
	cp := startProcess(t, xs, "ctl", "--socket", sock, "capture", "-c", "1000", "-w", file)
	waitFile(t, file, 64)
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d on SIGTERM", code)
	}
	select {
	case <-cp.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("capture did not end with the daemon:\n%s", cp.output())
	}
	if code := cp.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(cp.output(), "the daemon ended the capture") || !strings.Contains(cp.output(), "did it stop?") {
		t.Fatalf("capture across the daemon's stop exited %d, want 1 and a line saying the daemon ended it:\n%s", code, cp.output())
	}
	if _, err := exec.Command("tcpdump", "-r", file).CombinedOutput(); err != nil {
		t.Fatalf("tcpdump -r of the capture the daemon ended: %v", err)
	}
}

// TestCaptureRig captures echo traffic with ctl capture -c 100 -w FILE and
// reads the file back with tcpdump, tshark and pcapgo, then pipes a
// capture into tcpdump -r -.
func TestCaptureRig(t *testing.T) {
	r := startEchoRig(t)
	if _, back := r.echo(t, 5, 10); back < 5 { // neighbours resolved
		t.Fatalf("%d of 5 warm-up echoes", back)
	}
	file := filepath.Join(t.TempDir(), "echo.pcapng")
	cp := startProcess(t, r.xs, "ctl", "--socket", r.sock, "capture", "-c", "100", "-w", file)
	waitFile(t, file, 64)
	sent, back := r.echo(t, 50, 200)
	if back != 50 || len(sent) != 50 {
		t.Fatalf("%d of %d echoes came back", back, len(sent))
	}
	select {
	case <-cp.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("capture -c 100 did not end:\n%s", cp.output())
	}
	if code := cp.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(cp.output(), "100 frames captured, 0 lost") {
		t.Fatalf("capture exited %d:\n%s", code, cp.output())
	}
	// Each tool reads 100 UDP frames. Neither is asked to name what the
	// payload is: the client's ephemeral port can be one a dissector
	// claims (tshark once showed Elasticsearch for port 54328), so tcpdump
	// prints quietly (-q: "UDP, length N") and tshark lists each frame's
	// protocol stack.
	for _, tool := range []struct {
		args []string
		udp  string
	}{
		{[]string{"tcpdump", "-nn", "-q", "-r", file}, " UDP, length "},
		{[]string{"tshark", "-n", "-r", file, "-T", "fields", "-e", "frame.protocols"}, ":udp"},
	} {
		out, err := exec.Command(tool.args[0], tool.args[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tool.args[0], err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		udp := 0
		for _, l := range lines {
			if strings.Contains(l, tool.udp) {
				udp++
			}
		}
		if len(lines) != 100 || udp != 100 {
			t.Errorf("%s reads %d frames, %d of them UDP:\n%s", tool.args[0], len(lines), udp, out)
		}
	}
	payloads, inbound, comments := readCapture(t, file)
	if len(payloads) != 100 {
		t.Fatalf("pcapgo reads %d frames", len(payloads))
	}
	// Each datagram in, then its echo out, in the order sent.
	var rx, tx int
	for i, p := range payloads {
		if inbound[i] {
			if rx >= len(sent) || !bytes.Equal(p, sent[rx]) {
				t.Fatalf("rx frame %d: payload %q, want %q", rx, p[:min(len(p), 16)], sent[min(rx, len(sent)-1)][:16])
			}
			if !strings.HasPrefix(comments[i], "q0 rx handle 0x") {
				t.Errorf("rx frame %d: comment %q", rx, comments[i])
			}
			rx++
		} else {
			if tx >= len(sent) || !bytes.Equal(p, sent[tx]) {
				t.Fatalf("tx frame %d: payload differs from the datagram sent", tx)
			}
			if !strings.HasPrefix(comments[i], "q0 tx handle 0x") {
				t.Errorf("tx frame %d: comment %q", tx, comments[i])
			}
			tx++
		}
	}
	if rx != 50 || tx != 50 {
		t.Errorf("%d rx and %d tx frames, want 50 and 50", rx, tx)
	}

	// --duration ends a capture that sees nothing.
	quiet := filepath.Join(t.TempDir(), "quiet.pcapng")
	start := time.Now()
	out, err := r.ctl("capture", "--duration", "300ms", "--app", "99", "-w", quiet)
	if el := time.Since(start); err != nil || el > 5*time.Second || !strings.Contains(out, "0 frames captured") {
		t.Errorf("capture --duration 300ms: %v after %v\n%s", err, el, out)
	}
	if out, err := exec.Command("tcpdump", "-nn", "-r", quiet).CombinedOutput(); err != nil {
		t.Errorf("tcpdump -r of an empty capture: %v\n%s", err, out)
	}

	// ctl capture -w - | tcpdump -r -
	sh := exec.Command("sh", "-c", fmt.Sprintf("%s ctl --socket %s capture -w - -c 20 | tcpdump -nn -q -r -", r.xs, r.sock))
	var shOut bytes.Buffer
	sh.Stdout, sh.Stderr = &shOut, &shOut
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sh.Wait() }()
	for end := time.Now().Add(10 * time.Second); ; {
		r.echo(t, 5, 64)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("capture | tcpdump: %v\n%s", err, shOut.String())
			}
			n := strings.Count(shOut.String(), " UDP, length")
			if n != 20 || !strings.Contains(shOut.String(), "20 frames captured, 0 lost") {
				t.Errorf("capture | tcpdump printed %d frames:\n%s", n, shOut.String())
			}
			return
		default:
		}
		if time.Now().After(end) {
			sh.Process.Kill()
			t.Fatalf("capture | tcpdump did not end:\n%s", shOut.String())
		}
	}
}

// flood sends n datagrams of size bytes from host A to the echo as fast as
// the kernel takes them and returns how many echoes came back (waiting
// until none came for half a second).
func (r *echoRig) flood(b testing.TB, n, size int) (back int, elapsed time.Duration) {
	b.Helper()
	var c *net.UDPConn
	err := r.rig.A.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.rig.B.IPv4, 9000)))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	done := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		k := 0
		for {
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				done <- k
				return
			}
			k++
		}
	}()
	msg := make([]byte, size)
	start := time.Now()
	for range n {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	elapsed = time.Since(start)
	return <-done, elapsed
}

// BenchmarkEchoCapture floods the echo from a kernel socket with and
// without a capture of every frame running, and reports the share of
// echoes lost each way and what the capture itself could not keep
// (capture_lost: frames the ring had no room for), and with a capture
// whose filter matches nothing (the workers' side of a capture without
// the copying, the stream and the pcapng encoding). Run it with
// -benchtime=Nx: each iteration is one flood of each kind.
func BenchmarkEchoCapture(b *testing.B) {
	r := startEchoRig(b)
	if _, back := r.echo(b, 5, 10); back < 5 {
		b.Fatalf("%d of 5 warm-up echoes", back)
	}
	const n, size = 50000, 64
	var lostOff, lostOn, lostFiltered, capLost, capFrames, ppsOff, ppsOn float64
	iters := 0
	// capture runs a flood under ctl capture with args and returns the
	// echoes lost and the capture's own figures.
	capture := func(args ...string) (lost, frames, capLost int, pps float64) {
		file := filepath.Join(b.TempDir(), "flood.pcapng")
		cp := startProcess(b, r.xs, append([]string{"ctl", "--socket", r.sock, "capture", "-w", file}, args...)...)
		waitFile(b, file, 64)
		back, el := r.flood(b, n, size)
		cp.cmd.Process.Signal(os.Interrupt)
		<-cp.exited
		if _, err := fmt.Sscanf(strings.TrimSpace(cp.output()), "%d frames captured, %d lost", &frames, &capLost); err != nil {
			b.Fatalf("capture output %q: %v", cp.output(), err)
		}
		return n - back, frames, capLost, float64(n) / el.Seconds()
	}
	for b.Loop() {
		back, el := r.flood(b, n, size)
		lostOff += float64(n - back)
		ppsOff += float64(n) / el.Seconds()
		l, fr, lo, pps := capture()
		lostOn += float64(l)
		ppsOn += pps
		capFrames += float64(fr)
		capLost += float64(lo)
		// A capture whose filter matches nothing: the workers' hooks run,
		// nothing is copied, written or encoded.
		l, _, _, _ = capture("--app", "99")
		lostFiltered += float64(l)
		iters++
	}
	if out, err := r.ctl("show", "stats"); err == nil {
		b.Logf("show stats after the floods:\n%s", out)
	}
	k := float64(iters)
	b.ReportMetric(lostOff/k/n*100, "%lost-off")
	b.ReportMetric(lostOn/k/n*100, "%lost-on")
	b.ReportMetric(lostFiltered/k/n*100, "%lost-on-nothing-matched")
	b.ReportMetric(ppsOff/k, "sent-pps-off")
	b.ReportMetric(ppsOn/k, "sent-pps-on")
	b.ReportMetric(capFrames/k, "captured/op")
	b.ReportMetric(capLost/k, "capture-lost/op")
}
