package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestPacketConnCloseWakesReadAtOnce: a ReadFrom blocked as Close begins
// returns net.ErrClosed at once, as a net.UDPConn's does, however long
// Close's own work with the daemon takes (here a disconnect for each of
// 300 cut-through peers). Before, Close held the read half through that
// work, and the read returned only when Close did.
func TestPacketConnCloseWakesReadAtOnce(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli", RxFifoSize: 4096, TxFifoSize: 4096})
	pc, err := srv.ListenPacket("udp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	buf := make([]byte, 64)
	for i := range 300 {
		c, err := cli.Dial(ctx, fmt.Sprintf("udp://127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	pc.SetReadDeadline(time.Time{})
	done := make(chan time.Time, 1)
	go func() {
		_, _, err := pc.ReadFrom(buf)
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("the blocked read: %v, want net.ErrClosed", err)
		}
		done <- time.Now()
	}()
	time.Sleep(50 * time.Millisecond) // the read sleeps
	start := time.Now()
	closed := make(chan time.Time, 1)
	go func() {
		pc.Close()
		closed <- time.Now()
	}()
	woke, end := <-done, <-closed
	t.Logf("the read returned %v after Close began; Close took %v", woke.Sub(start), end.Sub(start))
	if end.Sub(start) < 5*time.Millisecond {
		t.Fatalf("Close took %v: too little to tell", end.Sub(start))
	}
	if woke.Sub(start) > end.Sub(start)/2 {
		t.Errorf("the read returned %v after Close began, Close taking %v: it waited for Close", woke.Sub(start), end.Sub(start))
	}
}
