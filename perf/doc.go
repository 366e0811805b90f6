// Command perf is xsessiond's benchmark harness: it builds a netns rig, runs
// a traffic generator against xsessiond and against kernel-socket baselines,
// and writes results as JSON, a Markdown table and plots.
//
// Usage (as root):
//
//	go run ./perf [--quick] [--reps 3] [--duration 2s] [--queues 2] [--flows 16]
//	              [--rate 0] [--gen-threads 1] [--payloads 64,512,1472] [--out perf/out]
//	go run ./perf gen  --iface IF --dst-mac MAC --dst-ip IP ...   (two-machine runs)
//	go run ./perf recv --iface IF --impl kernel|kernel-reuseport|xdp-drop|xsessiond ...
//
// The rig is two network namespaces joined by a veth pair with the
// requested queue count (nsbind/nstest); it is removed on exit and on
// SIGINT/SIGTERM. Host A runs the generator (perf/internal/gen: an AF_PACKET
// TPACKET_V2 tx ring with PACKET_QDISC_BYPASS, frames built once with
// gopacket, flows spread over UDP source ports, flat out or paced to a
// rate); host B runs the implementation under test:
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
//   - xsessiond: the daemon and an app; NewXsessiondReceiver,
//     NewXsessiondEcho and NewXsessiondCutThrough return ErrNotAvailable
//     until the daemon is wired in, and those rows are reported as "not
//     available" with no numbers.
//
// Scenarios (Scenarios builds the table): UDP receive at each payload size
// with 1 queue/1 flow and N queues/F flows, at 64 bytes also 1 queue/F
// flows and every queue step up to N; UDP echo round-trip latency at a
// fixed rate (kernel sockets in A, timestamps in the payload); cut-through
// throughput. Every figure is the median of the repetitions with min and
// max; each xsessiond row is divided by its baseline. CPU cost is the whole
// machine's busy time from /proc/stat per delivered packet (the method
// notes in results.md say exactly what is counted and subtracted).
//
// --quick runs only the 64-byte receive rows of the kernel baseline and
// xsessiond, once, and prints as its last line
//
//	udp64 cost ratio kernel/xsessiond = X.XX, rate ratio xsessiond/kernel = Y.YY
//
// with n/a in place of a number that could not be measured.
package main
