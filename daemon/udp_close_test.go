package daemon

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestUDPListenerCloseStress: rounds of an app whose UDP listener on the
// wire answers kernel clients on host A from two readers (ReadBatch, with
// its datagrams held in the fifo until the next call, and
// ReadFromUDPAddrPort), the listener closed under them at a random time in
// some rounds and the app in every one. Every call returns, nothing faults,
// the sessions end, and no descriptor or goroutine is left behind.
func TestUDPListenerCloseStress(t *testing.T) {
	rig, d := tcpRig(t)
	// Kernel clients on host A send datagrams to B:7900 and read the
	// replies, until stop.
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	stopClients := sync.OnceFunc(func() { close(stop); cwg.Wait() })
	t.Cleanup(stopClients)
	for i := 0; i < 4; i++ {
		var c *net.UDPConn
		if err := rig.A.Do(func() error {
			var err error
			c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.B.IPv4, 7900)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		cwg.Add(2)
		go func() {
			defer cwg.Done()
			b := make([]byte, 1200)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Write(b[:1+rand.IntN(1200)])
			}
		}()
		go func() {
			defer cwg.Done()
			b := make([]byte, 2000)
			for {
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				c.Read(b)
				select {
				case <-stop:
					c.Close()
					return
				default:
				}
			}
		}()
	}
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 20 * time.Second})
	end := time.Now().Add(4 * time.Second)
	round := 0
	for ; time.Now().Before(end); round++ {
		a := attach(t, d, app.Options{Name: "srv", RxFifoSize: 16384, TxFifoSize: 16384})
		pc, err := a.ListenPacketConn("udp://0.0.0.0:7900")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // ReadBatch, then an answer to each
			defer wg.Done()
			msgs := make([]app.Message, 32)
			for {
				n, err := pc.ReadBatch(msgs)
				if err != nil {
					return
				}
				for _, m := range msgs[:n] {
					if m.Remote.IsValid() {
						pc.WriteToUDPAddrPort(m.Payload, m.Remote)
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			echoUDP(pc)
		}()
		if rand.IntN(2) == 0 {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
			pc.Close()
		}
		time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
		a.Close()
		waitReturned(t, &wg, fmt.Sprintf("round %d", round))
	}
	waitFor(t, "the sessions to end", 5*time.Second, func() bool { return len(d.layer.Sessions()) == 0 })
	stopClients()
	if err := leaks.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rounds", round)
}
