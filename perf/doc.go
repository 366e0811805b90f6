// Command perf is xsessiond's benchmark harness: it builds a netns rig, runs
// a traffic generator against xsessiond and against kernel-socket baselines,
// and writes results as JSON, a Markdown table and plots.
//
// Usage (as root):
//
//	go run ./perf [--quick] [--tcp] [--only REGEXP] [--reps 3] [--duration 2s] [--queues 2] [--flows 16]
//	              [--rate 0] [--gen auto] [--gen-threads 1] [--payloads 64,512,1472] [--out perf/out]
//	              [--cpuprofile FILE] [--xs-stats] [--xs-batch N] [--xs-busy-poll]
//	              [--xs-ring N] [--xs-nap D] [--xs-spin D] [--xs-spin-max D] [--xs-app-spin D]
//	              [--xs-xdp-mode MODE] [--xs-rx-fifo BYTES] [--xs-tcp-bulk-fifo BYTES] [--xs-capture FILE]
//	              [--xs-daemon-process=true]
//	              [--tcp-cc cubic] [--server-cpu -2] [--steer=true] [--place-udp] [--peer-offload]
//	go run ./perf gen  --iface IF --dst-mac MAC --dst-ip IP [--gen packet|xdp] ...   (two-machine runs)
//	go run ./perf recv --iface IF --impl kernel|kernel-reuseport|xdp-drop|xsessiond ...
//	perf tcpserve --impl kernel|xsessiond --mode rr|crr|recv|send ...    (started by the harness)
//	perf echoserve --impl kernel|xsessiond --env JSON ...                (started by the harness)
//	perf xsdaemon --iface IF --netns NS --queues N --xs JSON              (started by an app's process)
//
// The rig is two network namespaces joined by a veth pair with the
// requested queue count (nsbind/nstest); it is removed on exit and on
// SIGINT/SIGTERM. Host A runs the generator (perf/internal/gen; frames
// built once with gopacket, flows spread over UDP source ports, flat out or
// paced to a rate), one of two (--gen, the results' gen column):
//
//   - xdp (gen.XDPGenerator; auto picks it for one-queue rows unless
//     --place-udp, whose B side it floods, below): an XDP
//     program run with BPF_F_TEST_XDP_LIVE_FRAMES returns XDP_TX for every
//     frame, so veth hands it to host B's NAPI as an XDP frame, as a NIC
//     with an XDP driver does: no socket buffer in host A, and none copied
//     for an XDP program in host B. B's veth gets GRO on for the row (the
//     NAPI that takes XDP frames), and xsessiond is attached in native mode
//     unless --xs-xdp-mode says otherwise. veth puts an XDP frame on the
//     peer's queue of the sending CPU, not by flow hash, so rows with more
//     queues use the other;
//   - packet (gen.Generator; auto picks it for multi-queue rows): an
//     AF_PACKET TPACKET_V2 tx ring with PACKET_QDISC_BYPASS, whose socket
//     buffers veth spreads over B's queues by flow hash; B's receive runs
//     in the generator's sendto, and an XDP program in B (generic or
//     native) gets a copy of each frame in a page first.
//
// On a 2-vCPU VM (AMD EPYC, a PVM guest, 2026-12-04) the generator alone
// sent 1.19–1.54 Mpps at 557–738 ns of machine CPU per packet with xdp
// (five --quick runs) and 0.29–0.42 Mpps at 2,700–4,900 with packet, which
// weighed the same on both sides of the cost ratio and pulled it towards 1
// (cost ratio kernel/xsessiond 1.07–2.02 in eighteen --quick runs with
// packet; 3.15–4.55 in five with xdp, below).
//
// Split over two machines, perf gen sends on one (either generator: with
// --gen xdp the frames go to the NIC driver's XDP transmit, which some
// drivers offer only while an XDP program is attached to the interface; it
// reports the interface's tx_dropped growth, the frames the driver did not
// send) and perf recv receives on the other; loss is the sender's count
// less the receiver's.
//
// Host B runs the implementation under test:
//
//   - kernel: one UDP socket read with recvmmsg (golang.org/x/net/ipv4
//     ReadBatch, as golang.org/x/sys/unix has no Recvmmsg);
//   - kernel-reuseport: one socket per queue in an SO_REUSEPORT group;
//   - xdp-drop: an XDP program (cilium/ebpf/asm) that counts the frames in a
//     per-CPU array and drops them, the floor;
//   - gen-only: nothing attached, frames addressed to another MAC, so B's
//     kernel drops them at IP input: the generator-alone cost;
//   - socketpair: two local apps over a unix SOCK_SEQPACKET pair, the
//     cut-through baseline;
//   - xsessiond: the daemon itself (package daemon, as xsessiond run
//     starts it) on B's veth end (XDP program, one AF_XDP socket and
//     worker per queue, session layer, control socket in a temporary
//     directory), in a process of its own beside the app's (perf
//     xsdaemon, started by the app's process, on its CPUs: xsdaemon.go;
//     --xs-daemon-process=false runs it in the app's process), and apps
//     attached to it through the app library over that socket, as any
//     app is. The receiver's app binds
//     the port with ListenPacketConn and reads with ReadBatch (datagrams
//     in place in the fifo, handed back by the next call, as
//     examples/udpsink does); the echo app answers with
//     ReadFromUDPAddrPort and WriteToUDPAddrPort, the calls the kernel
//     echo makes on its socket (neither allocates); the cut-through pair
//     is the daemon without a datapath on lo and two apps joined by a
//     local-scope UDP Dial, a writer calling Write once per datagram and
//     a reader taking up to 64 per ReadBatch, the library putting each to
//     sleep when the fifo is full or empty. The
//     --xs-* flags shape the engine and the app; --xs-stats prints the
//     engine's counters (drops by reason, AF_XDP ring counters, worker
//     loops and sleeps) after each receive and echo repetition, and for
//     each TCP repetition the worker's spins, naps and sleeps and the
//     app's reads that found nothing (spins, spins that found data,
//     sleeps) in the window; --xs-capture
//     FILE runs each xsessiond receive and echo repetition with a
//     capture of every frame in a process of its own (perf capture: the
//     request xsessiond ctl capture makes and its pcapng conversion) and
//     prints how many frames it wrote and lost, to compare the loss with
//     and without a capture.
//
// Loss accounting (drops.go): every receive repetition reads the drop
// counters before the generator starts and after the receiver has
// drained, and prints one line per repetition,
//
//	udp64-q1-f1/xsessiond rep 1: sent S delivered D loss L: counted C (counter=n ...), unexplained U; breakdown ...
//
// where counted sums the veth ends' drops (B rx_dropped, less the
// frames A's tx_dropped counted where B receives in its backlog, which
// counts a frame it refuses on both ends, and so A's rx_dropped less B's
// tx_dropped for the echo's replies; an XDP frame B's ring had no room
// for is in both, and counted once, as B's; A tx_dropped only in the echo
// rows, whose sender is a socket: the packet generator sends a frame veth
// refused again), B's UDP InErrors and NoPorts, xsessiond's per-queue
// drop reasons, and with its XDP program in generic mode the AF_XDP
// sockets' rx_dropped and rx_ring_full (a generic redirect the socket
// refused has no device counter), and U = L − C. The breakdown shows
// counters that are already inside the counted ones (the AF_XDP sockets'
// counters, inside B's rx_dropped in native mode; UDP RcvbufErrors inside
// InErrors; the XDP frames B's ring refused, veth-a-xdp-xmit-err, inside
// B's rx_dropped) and the packet generator's frames veth A refused and it
// sent again (veth-a-tx-retried).
// A repetition drains until D + C reaches S or the drain time passes, so
// U is what no counter explains, not what was still on its way. A window
// in which nothing was sent or delivered (goroutines not run on a loaded
// machine) is stretched until something was, up to 20 windows. --only
// runs the scenarios whose name matches; --xs-ring, --xs-nap, --xs-spin
// and --xs-spin-max override the engine's ring size, nap, spin and the
// longest the spin may grow; --xs-app-spin the apps' read spin
// (app.Options.ReadSpin).
//
// An implementation that cannot run here returns an error matching
// ErrNotAvailable; its rows are reported as "not available" with no
// numbers.
//
// Scenarios (Scenarios builds the table): UDP receive at each payload size
// with 1 queue/1 flow and N queues/F flows, at 64 bytes also 1 queue/F
// flows and every queue step up to N; UDP echo round-trip latency at a
// fixed rate (kernel sockets in A, timestamps in the payload, each request
// written at its due time by a sender sleeping in nanosleep(2), the client's
// socket with the 4 MiB receive buffer of every receiving socket here; the
// server in a process of its own, perf echoserve, started in B's namespace:
// the kernel echo, or the daemon with the echo app, so that the client
// and the server do not share a Go runtime, echoserve.go);
// cut-through throughput. Every figure is the median of the repetitions
// with min and max; each xsessiond row is divided by its baseline. The
// rows of a group take turns, repetition by repetition (runGroup), so
// that a row and its baseline see the host alike; each echo repetition's
// line gives its own p50, p99 and p99.9, to compare turn by turn. CPU
// cost is the whole machine's busy time from /proc/stat per delivered
// packet (the method notes in results.md say exactly what is counted and
// subtracted).
//
// TCP scenarios (tcp.go, tcpserve.go): a kernel TCP client in host A (Go
// net) against a TCP server in host B that is one function on a
// net.Listener, tcpServer.serve, given net.Listen's listener (kernel) or
// app.Listen's (xsessiond: an app attached to the daemon on B's veth end,
// which runs in a process of its own beside the server's, or with
// --xs-daemon-process=false in the server's). The server runs as a
// process of its own, perf tcpserve, started from a thread in B's
// namespace and driven over its stdin and stdout, so its user+system time
// (with the daemon's process's) is B's side alone: the server and, for
// xsessiond, the daemon's workers and gVisor's goroutines.
// Rows: request/response of 64 bytes over 1 and 32 connections
// (transactions/s, p50/p99, B CPU per transaction), connect/request/close
// from 4 client goroutines (connections/s, B CPU per connection), bulk
// receive (A writes, B reads) and bulk send (B writes, A reads) on one
// connection (Gbit/s, B CPU per GB). Every repetition checks that both
// ends agree (transactions answered = transactions completed, bytes
// written = bytes read once the sender closed) and counts connection
// errors; the TCP goals table holds each xsessiond row against the
// kernel's of the same run. --tcp runs the TCP rows alone. The xsessiond
// server's app takes the daemon's default fifos (64 KiB per direction)
// in the request/response rows and --xs-tcp-bulk-fifo (1 MiB) in the bulk
// rows, as a program moving bulk data over kernel sockets sizes SO_SNDBUF
// and SO_RCVBUF, or lets the kernel grow them to 4–6 MiB: with 64 KiB
// each chunk the app writes waits for the worker to drain the fifo and
// signal room (go run ./perf --tcp --quick --only 'tcp(send|recv)-c1/xs',
// two rounds: bulk send 3.7–4.1 Gbit/s with 64 KiB, 15.2–15.5 with 1
// MiB; bulk receive 1.9–2.0 and 2.9).
//
// The kernel sockets of both hosts use the congestion control --tcp-cc
// names in the TCP rows, cubic (Linux's default) unless told otherwise,
// whatever the machine's default: the sender's congestion control decides
// the bulk rows, and a rig that took the machine's would give other
// ratios on another machine. The harness sets it on each socket
// (TCP_CONGESTION; an accepted connection keeps its listener's), not as
// the namespaces' default: a namespace may only default to one of
// net.ipv4.tcp_allowed_congestion_control, and on a host whose image
// sets bbr that list can leave cubic out (writing it failed with EPERM
// on such a VM, every TCP row with it). This VM's image sets bbr; with it (--tcp-cc
// bbr, five --quick runs, 2026-12-03 10:51–10:53 UTC) host A's sender
// paced itself at its estimate of the path's rate, 2.8 Gbit/s into
// xsessiond (ss -tin in A: pacing_rate 2.79 Gbit/s, rtt 2.5 ms, an
// acknowledgement per 101 segments) against 6.2 into B's kernel (rtt 1.0
// ms, one per 24), and bulk receive was 0.42–0.46 of the kernel's. The
// kernel server's bbr sender paced bulk send to 16–21 Gbit/s, of which
// xsessiond's gVisor sender (reno, 14.7–17.7 Gbit/s with either) did
// 0.76–0.99; with cubic the kernel sends 22–44 Gbit/s.
//
// The echo and TCP rows place their server process (perf echoserve, perf
// tcpserve: the kernel's or xsessiond's) on one CPU, the last this process
// may use unless --server-cpu names another, and move this process's
// threads, the client's, to the others with as many Ps, as with two hosts
// (--server-cpu -1: both anywhere). Where both may run on every CPU, the
// kernel wakes a thread on its waker's CPU (this VM's vCPUs share no
// cache), so the kernel server and its client took turns on one CPU, each
// wake-up cheap, which two hosts cannot do; xsessiond's hand-overs between
// its worker, gVisor's goroutines, the pump and the app crossed CPUs, each
// such wake-up taking 12–40 µs on this VM. Two interleaved rounds of
// --tcp --quick (2026-12-03 13:37 UTC), ratios xsessiond/kernel, placed
// against --server-cpu -1: request/response over 1 connection 0.56 at
// 2.14–2.20× B's CPU per transaction against 0.31–0.32 at 4.25–4.33×;
// over 32, 0.51–0.54 at 1.89–1.96× against 0.46–0.48 at 2.25×;
// connect/request/close 0.38–0.41 at 2.75–2.91× against 0.34–0.35 at
// 4.15–4.19×; bulk receive 0.57–0.58 against 0.58–0.61; bulk send
// 0.57–0.62 against 0.50–0.52. The kernel's own rates fall with it (one
// connection: 19,000 transactions/s placed, 31,000 not). The echo at
// 10,000/s, four interleaved rounds, p50/p99 µs: placed, the kernel
// 62.6–118.6/133.8–248.4 and xsessiond 71.6–106.7/154.2–242.3; not,
// 61.9–89.8/181.9–352.5 and 99.2–143.4/294.1–455.8.
//
// With the rows placed, --steer (on by default) also steers each host's
// receive work to its own CPUs (steer.go): on veth a transmit runs the
// peer's receive in the sender's softirq, which put host A's TCP on B's
// CPU whenever B sent, and B's receive on A's CPU whenever A sent. RPS on
// A's veth sends A's receive to the client's CPUs and on B's veth B's to
// the server's CPU; while xsessiond's XDP program is attached in native
// mode, B's veth NAPI is threaded and its thread placed on the server's
// CPU (in generic mode, the daemon's default on a one-queue veth, the
// program runs in the receive softirq RPS put there). Host B's
// CPU time in the TCP rows is then all the busy time of the server's CPU
// (/proc/stat), the server process's beside it in the log line.
// --steer=false gives the placement without it. Interleaved rounds
// (2026-12-03 18:17–18:22 UTC), ratios xsessiond/kernel, steered against
// not: one connection 0.51–0.69 at 1.33–1.87× B's CPU per transaction
// against 0.49–0.51 at 2.30–2.59×; 32 connections 0.76–0.96 at 1.05–1.32×
// against 0.46–0.50 at 2.01–2.12×; bulk receive 0.24–0.34 against
// 0.42–0.59 (veth copies each of A's segments for the XDP program, on B's
// CPU now); bulk send 0.63–0.74 against 0.61–0.79.
//
// The UDP receive and gen-only rows are not placed: the generator's
// transmit runs host B's receive (the kernel's UDP input up to the socket,
// or the XDP program and its AF_XDP copy) in its own softirq, and the
// receiver under test runs on any CPU. So the generator's CPU carries both
// hosts' work, and where the generator is slow the rows' rate is the
// generator's: on a 2-vCPU VM whose generator alone sent 0.39 Mpps,
// xsessiond delivered all it was offered with the machine 70% busy, the
// kernel with it 94% busy. --place-udp places them as two hosts would
// be: host B on the server's CPU (RPS on B's veth, in native XDP mode B's
// NAPI threaded there, and this process, where the receiver runs, with
// GOMAXPROCS as many as B's CPUs), the generator's threads on the others;
// B CPU ns/pkt is then that CPU's busy time per delivered packet. On one
// CPU the kernel's receive softirq then starves its reader: five --quick
// runs placed so (2026-12-04 12:18–12:21 UTC), 64-byte rows, the kernel
// 0.032–0.079 Mpps with 83–92% of what was offered lost (its socket buffer
// full, UDP InErrors), xsessiond 0.293–0.406 Mpps with 0–6.2% lost (its
// AF_XDP rx ring full or fill ring empty: the XDP program drops what the
// worker cannot take before the work is done), every loss counted; cost
// ratio kernel/xsessiond 3.95–8.93, rate ratio 3.98–9.02. That compares
// a host B of one CPU under a flood, not the per-packet cost, which is
// why it is not the default; five runs without it right after: cost ratio
// 1.52–1.86, rate ratio 1.00–1.27 (both with the packet generator). With
// XDP frames placed so, B's one CPU took xsessiond's NAPI thread, worker
// and app against a generator that costs next to nothing: one --quick run
// lost 79% at B's ring (counted), so --place-udp keeps the packet
// generator unless --gen says xdp.
//
// Host A's veth has its tx checksum offload and with it TSO off, as a wire
// delivers: A's kernel segments TCP in software, so both servers receive
// MSS-sized frames, and UDP checksums arrive complete. --peer-offload
// leaves them on, as between containers: A's TCP then sends segments of
// up to 64 KiB, which the kernel server receives whole; xsessiond gets them
// whole in generic XDP mode (--xs-xdp-mode generic), as chains of AF_XDP
// descriptors it joins, while native mode turns A's TSO off.
//
// --quick runs only the 64-byte receive rows of the generator alone, the
// kernel baseline and xsessiond, and the TCP rows, once, prints one line
// per TCP group,
//
//	tcp GROUP: rate xsessiond/kernel = X.XX, B CPU xsessiond/kernel = Y.YY (goal: ...; met: yes|no|n/a)
//
// and, as its last line,
//
//	udp64 cost ratio kernel/xsessiond = X.XX, rate ratio xsessiond/kernel = Y.YY, receive cost ratio (generator's cost taken out) = Z.ZZ, host B CPU ratio kernel/xsessiond = W.WW, unexplained loss kernel/xsessiond = U/V
//
// with n/a in place of a number that could not be measured (--quick --tcp
// leaves the UDP rows and this line out). The cost ratio is the whole
// machine's CPU per delivered packet, the generator's included; the
// receive cost ratio is that of rx ns/pkt, the generator-alone row's cost
// per sent packet taken out, n/a with the xdp generator (its gen-only row
// includes B building a socket buffer for each frame it drops, which
// xsessiond's native XDP path never does, so it would be taken out of
// xsessiond's cost without being in it). Where the generator costs much,
// it weighs the same on both sides of the first ratio and pulls it towards
// 1: with the packet generator on the VM above (--gen packet), eighteen
// --quick runs gave 1.07–2.02 while the receive cost ratio was 1.20–3.57.
// Ten --quick runs with the xdp generator on the same VM (2026-12-04
// 13:12–13:30 UTC): cost ratio 3.05–4.55, rate ratio 3.06–4.70 (kernel
// 0.36–0.58 Mpps at 2,571–4,575 ns/pkt losing 0.8–4.1% to a full socket
// buffer, xsessiond 1.33–2.19 Mpps at 701–1,240 ns/pkt losing 0–4.9% to
// its AF_XDP rings, all counted). The host B CPU
// ratio is that of B CPU ns/pkt, measured with --place-udp alone (n/a
// without).
//
// --cpuprofile FILE writes a runtime/pprof CPU profile of the measurement
// window of the first repetition of each xsessiond 64-byte receive row and
// each xsessiond TCP row (the TCP server process profiles itself; its
// goroutines: part=datapath for the daemon, part=app, part=server)
// (the first to FILE, later rows to FILE with their group inserted before
// the extension). Goroutines carry the label part=datapath (the daemon's:
// the engine's workers and mirror, the control socket), part=app (the
// app library's and the consumer's) or part=gen (the
// generator, whose sendto also runs host B's veth receive path in
// softirq), so for example
//
//	go tool pprof -top -tagfocus part=datapath FILE
//
// shows the workers alone.
package main
