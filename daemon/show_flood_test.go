package daemon

import (
	"context"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
)

// TestShowFloodHeap: with 10,000 cut-through sessions (show sessions is
// 5.6 MB of JSON), 64 connections that each ask for show sessions 8 times
// and read nothing make the daemon hold a few documents at once
// (api.DefaultMaxShows), not a few per connection. Before, the heap grew
// by 0.7 to 1 GiB (2.1 GiB with 256 connections) until the send timeout
// dropped them; with 4 at once it grows by about 80 MiB.
func TestShowFloodHeap(t *testing.T) {
	// A send timeout longer than the test: no flooding client is dropped
	// while the heap is sampled.
	d := startDaemon(t, func(c *Config) { c.Control.SendTimeout = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cutThroughServer(t, ctx, d.Socket())
	for i := range 2 {
		connectCutThrough(t, ctx, attachRawClient(t, ctx, d.Socket(), "client"+string(rune('a'+i))), 2500)
	}
	doc, err := show(t, d.Socket(), "sessions")
	if err != nil {
		t.Fatal(err)
	}
	peak := leakcheck.HeapPeak()
	hello, err := api.AppendRecord(nil, 1, 0, &api.Hello{Major: api.VersionMajor, Name: "flood"})
	if err != nil {
		t.Fatal(err)
	}
	const conns = 64
	var fds []int
	defer func() { api.CloseFDs(fds) }()
	for range conns {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: d.Socket()}); err != nil {
			t.Fatal(err)
		}
		unix.Sendmsg(fd, hello, nil, nil, 0)
		for i := range 8 {
			rec, err := api.AppendRecord(nil, uint32(i+2), 0, &api.Show{What: api.ShowSessions})
			if err != nil {
				t.Fatal(err)
			}
			unix.Sendmsg(fd, rec, nil, nil, unix.MSG_DONTWAIT)
		}
	}
	time.Sleep(3 * time.Second)
	grew := peak()
	t.Logf("show sessions: %d bytes; heap peak %d MiB above the start with %d connections asking without reading", len(doc), grew>>20, conns)
	if grew > 192<<20 {
		t.Errorf("heap grew by %d MiB for %d connections asking for a %d-byte show without reading", grew>>20, conns, len(doc))
	}
}
