package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// synFrame builds an Ethernet frame carrying a TCP SYN from src to dst.
func synFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.AddrPort, seq uint32) []byte {
	f := make([]byte, 14+20+20)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], 40)
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], csum(0, ip))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:2], src.Port())
	binary.BigEndian.PutUint16(tcp[2:4], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:16], 65535)
	var ph [12]byte
	copy(ph[0:4], s4[:])
	copy(ph[4:8], d4[:])
	ph[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(ph[10:12], 20)
	binary.BigEndian.PutUint16(tcp[16:18], csum(sum(0, ph[:]), tcp))
	return f
}

func sum(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func csum(s uint32, b []byte) uint16 {
	s = sum(s, b)
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// TestTCPSynFlood: 10,000 SYNs from an AF_PACKET socket on host A (random
// source ports), then 10,000 from random addresses of A's subnet that
// nobody owns, while an established connection echoes through an app's
// listener: the connection keeps flowing after each, every byte checked,
// connections to another app's listener get through during each, and a
// new connection still gets through afterwards.
func TestTCPSynFlood(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "flooded"})
	ln := listenEcho(t, a, "tcp://0.0.0.0:7000")
	defer ln.Close()
	dst := netip.AddrPortFrom(rig.B.IPv4, 7000)
	var bMAC net.HardwareAddr
	if err := rig.B.Do(func() error {
		ifc, err := net.InterfaceByName(rig.B.Link)
		if err == nil {
			bMAC = ifc.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The established connection: chunks echoed and checked until told
	// to stop.
	var echoed, slowest atomic.Int64 // bytes echoed; the slowest chunk's round trip, ns
	stop := make(chan struct{})
	flowErr := make(chan error, 1)
	go func() {
		flowErr <- rig.A.Do(func() error {
			c, err := net.DialTimeout("tcp", dst.String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			chunk := make([]byte, 16<<10)
			got := make([]byte, len(chunk))
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				rand.Read(chunk)
				sent := time.Now()
				c.SetDeadline(sent.Add(10 * time.Second))
				if _, err := c.Write(chunk); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, got); err != nil {
					return err
				}
				if !bytes.Equal(got, chunk) {
					return errEcho
				}
				echoed.Add(int64(len(chunk)))
				if d := int64(time.Since(sent)); d > slowest.Load() {
					slowest.Store(d)
				}
			}
		})
	}()
	waitFor(t, "the connection to flow", 5*time.Second, func() bool { return echoed.Load() > 0 })

	// Another app's listener, which nobody floods: connections to it
	// during the flood get through, their SYNs not held behind the flood's
	// in the worker's queue (a client sends a dropped SYN again a second
	// later: one such resend is allowed, for a SYN or SYN-ACK lost in
	// the flood on a loaded host).
	other := attach(t, d, app.Options{Name: "bystander"})
	oln := listenEcho(t, other, "tcp://0.0.0.0:7001")
	defer oln.Close()
	odst := netip.AddrPortFrom(rig.B.IPv4, 7001)

	// The flood, from A's address and then from addresses of A's subnet
	// that nobody owns (a spoofed flood: the SYN-ACKs wait for next hops
	// that never resolve, and must hold up no other packet).
	for _, spoofed := range []bool{false, true} {
		slowest.Store(0)
		dials := make(chan error, 8)
		for i := range cap(dials) {
			go func() {
				time.Sleep(time.Duration(i) * 5 * time.Millisecond) // during the flood
				start := time.Now()
				err := kernelEcho(rig, odst, []byte("beside the flood"))
				// Its first SYN or SYN-ACK may be lost in the flood when
				// other load on the host slows the worker (CI runs
				// packages side by side: two of eight dials took 1.03 s
				// there, during the spoofed flood); the peer sends the
				// SYN again a second later. More than that would be a
				// SYN left waiting behind the flood's.
				if took := time.Since(start); err == nil && took > 2500*time.Millisecond && !raceEnabled {
					err = fmt.Errorf("took %v", took)
				}
				dials <- err
			}()
		}
		flood(t, rig, bMAC, dst, spoofed)
		for range cap(dials) {
			if err := <-dials; err != nil {
				t.Errorf("a connection to another listener during the flood (spoofed sources: %v): %v", spoofed, err)
			}
		}
		waitProgress(t, fmt.Sprintf("the established connection after the flood (spoofed sources: %v)", spoofed), 10*time.Second, echoed.Load, echoed.Load()+1<<20)
		// Every SYN the worker set aside went to gVisor (or was dropped,
		// counted): none waits on after the flood.
		waitFor(t, "the worker's queue of SYNs to empty", 5*time.Second, func() bool { return d.Engine().Stats().Totals.SynQueued == 0 })
		worst := time.Duration(slowest.Load())
		t.Logf("the slowest chunk's round trip during the flood (spoofed sources: %v): %v", spoofed, worst)
		if spoofed && worst > 900*time.Millisecond && !raceEnabled { // the race detector slows gVisor past any bound
			// The SYN-ACKs held up the queue for their next hops (a
			// second each: 1.03-1.07 s seen before they were set aside,
			// 0.09-0.37 s after).
			t.Errorf("a chunk took %v during the spoofed flood", worst)
		}
	}
	close(stop)
	if err := <-flowErr; err != nil {
		t.Fatalf("the established connection: %v", err)
	}
	if err := kernelEcho(rig, dst, []byte("after the flood")); err != nil {
		t.Fatalf("a new connection after the flood: %v", err)
	}
	t.Logf("echoed %d bytes on the established connection; tcp %+v; SYNs dropped for the worker's full queue: %d", echoed.Load(), d.Engine().TCPStats(), d.Engine().Stats().Totals.Drops["syn-backlog"])
}

// flood sends 10,000 SYNs to dst from an AF_PACKET socket on host A, from
// random ports of A's address or, spoofed, of random addresses of A's
// subnet that nobody owns.
func flood(t *testing.T, rig *nstest.Pair, bMAC net.HardwareAddr, dst netip.AddrPort, spoofed bool) {
	t.Helper()
	start := time.Now()
	err := rig.A.Do(func() error {
		ifc, err := net.InterfaceByName(rig.A.Link)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(unix.ETH_P_IP), Halen: 6}
		copy(sa.Addr[:], bMAC)
		var r [6]byte
		for i := 0; i < 10000; i++ {
			rand.Read(r[:])
			port := 1024 + binary.BigEndian.Uint16(r[:2])%60000
			src := rig.A.IPv4
			if spoofed {
				b := src.As4()
				b[3] = 100 + r[5]%100
				src = netip.AddrFrom4(b)
			}
			f := synFrame(bMAC, ifc.HardwareAddr, netip.AddrPortFrom(src, port), dst, binary.BigEndian.Uint32(r[2:]))
			for try := 0; ; try++ {
				err := unix.Sendto(fd, f, 0, sa)
				if err == nil {
					break
				}
				if err != unix.ENOBUFS || try == 1000 {
					return fmt.Errorf("send syn %d: %w", i, err)
				}
				time.Sleep(100 * time.Microsecond) // the veth's queue is full
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("10,000 SYNs sent in %v (spoofed sources: %v)", time.Since(start), spoofed)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
