package daemon

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPLossKernel: with the wire between A and B losing 1% of the
// frames, delaying the others by 2 ms and sending 5% of those at once,
// ahead of the delayed ones (netem's "loss 1% delay 2ms reorder 5%",
// done by the rig's relay, each way), an app on B dialling a kernel echo
// server on A moves 100 MiB each way exact, and gVisor's retransmissions
// show the loss was there.
func TestTCPLossKernel(t *testing.T) {
	const size = 100 << 20
	rig, d := tcpRigWith(t, nstest.Options{Relay: true})
	kl := kernelListen(t, rig.A, ":7800")
	go echoServe(kl)
	a := attach(t, d, app.Options{Name: "lossy", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7800).String())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	imp := nstest.Impairment{Loss: 0.01, Delay: 2 * time.Millisecond, Reorder: 0.05}
	if err := rig.Impair(imp); err != nil {
		t.Fatal(err)
	}
	relayBefore := rig.RelayStats()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	before := d.Engine().TCPStats().Retransmits
	start := time.Now()
	// 36-70 s here, as the wire's round trips and losses set the pace;
	// more when the machine is busy.
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, werr = c.Write(data)
	}()
	got := make([]byte, size)
	_, rerr := io.ReadFull(c, got)
	wg.Wait()
	if werr != nil || rerr != nil {
		t.Fatalf("write %v, read %v after %v", werr, rerr, time.Since(start))
	}
	if !bytes.Equal(got, data) {
		t.Fatal(errEcho)
	}
	rt := d.Engine().TCPStats().Retransmits - before
	st := rig.RelayStats()
	t.Logf("100 MiB each way through %+v in %v; %d segments retransmitted by gVisor; the relay carried %d frames, dropped %d, sent %d ahead, held %d (%d over its limit)",
		imp, time.Since(start), rt, st.Frames-relayBefore.Frames, st.Dropped-relayBefore.Dropped,
		st.Reordered-relayBefore.Reordered, st.Delayed-relayBefore.Delayed, st.Overflow-relayBefore.Overflow)
	if rt == 0 || st.Dropped == relayBefore.Dropped || st.Reordered == relayBefore.Reordered {
		t.Fatal("no retransmission, loss or reordering: the relay did not act")
	}
}
