package nstest_test

import (
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// udpPair opens a UDP socket on B's IPv4 port 9000 and one on A connected
// to it, with the neighbours resolved.
func udpPair(t *testing.T, p *nstest.Pair) (tx, rx *net.UDPConn) {
	t.Helper()
	if err := p.B.Do(func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	if err := rx.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	if err := p.A.Do(func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	warmUp(t, tx, rx)
	return tx, rx
}

// sendSeq sends n sequenced datagrams, gap apart, and returns the
// sequence numbers B received in the order it received them, waiting up
// to quiet after the last one.
func sendSeq(t *testing.T, tx, rx *net.UDPConn, n int, gap, quiet time.Duration) []uint32 {
	t.Helper()
	got := make(chan []uint32, 1)
	go func() {
		var seqs []uint32
		buf := make([]byte, 2048)
		for {
			rx.SetReadDeadline(time.Now().Add(quiet))
			m, err := rx.Read(buf)
			if err != nil {
				got <- seqs
				return
			}
			if seq, ok := checkPayload(buf[:m]); ok {
				seqs = append(seqs, seq)
			}
		}
	}()
	for i := range n {
		if _, err := tx.Write(payload(uint32(i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
	}
	return <-got
}

// TestRelay runs a rig joined through the relay: clean, it carries every
// datagram in order; impaired, it loses, delays and reorders as asked.
func TestRelay(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Relay: true})
	tx, rx := udpPair(t, p)

	seqs := sendSeq(t, tx, rx, 2000, 20*time.Microsecond, 300*time.Millisecond)
	if len(seqs) != 2000 {
		t.Fatalf("clean: %d of 2000 datagrams arrived", len(seqs))
	}
	for i, s := range seqs {
		if s != uint32(i) {
			t.Fatalf("clean: datagram %d arrived as the %dth", s, i)
		}
	}

	if err := p.Impair(nstest.Impairment{Loss: 0.3}); err != nil {
		t.Fatal(err)
	}
	before := p.RelayStats()
	seqs = sendSeq(t, tx, rx, 2000, 20*time.Microsecond, 300*time.Millisecond)
	st := p.RelayStats()
	// Every datagram missing was dropped by the relay (which may also have
	// dropped a neighbour probe or two).
	if dropped := st.Dropped - before.Dropped; len(seqs) < 1000 || len(seqs) > 1800 || uint64(2000-len(seqs)) > dropped {
		t.Fatalf("loss 30%%: %d of 2000 arrived, %d dropped", len(seqs), dropped)
	}

	// Delay: a ping's round trip crosses the relay twice.
	if err := p.Impair(nstest.Impairment{Delay: 25 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.A.Ping(p.B.IPv4); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 50*time.Millisecond {
		t.Fatalf("delay 25ms: ping round trip %v", rtt)
	}

	if err := p.Impair(nstest.Impairment{Delay: 5 * time.Millisecond, Reorder: 0.2}); err != nil {
		t.Fatal(err)
	}
	before = p.RelayStats()
	seqs = sendSeq(t, tx, rx, 1000, 50*time.Microsecond, 300*time.Millisecond)
	st = p.RelayStats()
	inversions := 0
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] {
			inversions++
		}
	}
	if len(seqs) != 1000 || inversions == 0 || st.Reordered == before.Reordered || st.Delayed == before.Delayed {
		t.Fatalf("reorder 20%%: %d of 1000 arrived, %d out of order; relay %+v", len(seqs), inversions, st)
	}
	t.Logf("reorder 20%%: %d of 1000 arrived out of order; relay %+v", inversions, st)

	if err := p.Impair(nstest.Impairment{Reorder: 0.1}); err == nil {
		t.Error("reordering without a delay was taken")
	}
	if err := (nstest.NewPair(t, nstest.Options{})).Impair(nstest.Impairment{Loss: 0.1}); err == nil {
		t.Error("a rig without a relay took an impairment")
	}
}
