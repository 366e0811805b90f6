package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// segmemEnv makes the test binary run segmemChild instead of the tests.
const segmemEnv = "XSESSIOND_TEST_SEGMEM"

// segmemChild attaches as the uid it runs as, asking for a small first
// segment, segments of 1 GiB after it and fifos of 256 KiB, binds global
// UDP listeners (a fifo pair each) until one fails, and prints the
// segments' sizes in all: "segments N BYTES", then the last error.
func segmemChild(arg string) int {
	var p struct{ Sock string }
	if err := json.Unmarshal([]byte(arg), &p); err != nil {
		fmt.Println("bad argument:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var sizes []uint64
	cl, err := api.DialClient(ctx, p.Sock, api.ClientOptions{Name: "segmem", Notify: func(m api.Message, fds []int) {
		api.CloseFDs(fds)
		if sa, ok := m.(*api.SegmentAdded); ok {
			mu.Lock()
			for _, s := range sa.Segments {
				sizes = append(sizes, s.Size)
			}
			mu.Unlock()
		}
	}})
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer cl.Close()
	r, fds, err := cl.Call(ctx, &api.Attach{Name: "segmem", Scope: flow.ScopeGlobal, RxFifoSize: 256 << 10, TxFifoSize: 256 << 10,
		SegmentSize: 1 << 20, AddSegmentSize: 1 << 30})
	api.CloseFDs(fds)
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	for _, s := range r.(*api.AttachReply).Segments {
		sizes = append(sizes, s.Size)
	}
	for port := 9500; port < 9600; port++ {
		if _, fds, err = cl.Call(ctx, &api.Bind{URI: "udp://0.0.0.0:" + strconv.Itoa(port)}); err != nil {
			break
		}
		api.CloseFDs(fds)
	}
	mu.Lock()
	var total uint64
	for _, s := range sizes {
		total += s
	}
	fmt.Printf("segments %d %d\n", len(sizes), total)
	mu.Unlock()
	fmt.Printf("last %s\n", errWord(err))
	return 0
}

// TestUnprivilegedSegmentMemory: an app of a uid other than 0 maps no
// more segment memory than its bound (limits.app_segment_memory), though
// it asks for segments of 1 GiB after its first: the segments it gets,
// the first included, stay within the bound, and the session past it is
// refused with no-memory.
func TestUnprivilegedSegmentMemory(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	dir := nobodyDir(t, "xsessiond-segmem-")
	sock := filepath.Join(dir, "api.sock")
	cfg := filepath.Join(dir, "xsessiond.yaml")
	const bound = 8 << 20
	conf := fmt.Sprintf("socket: %s\nsocket_group: nogroup\ninterfaces:\n  - name: %s\n    netns: %s\nlimits:\n  app_segment_memory: %d\n",
		sock, rig.B.Link, rig.B.Name, bound)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	out := string(runAsNobody(t, dir, segmemEnv, map[string]string{"Sock": sock}))
	var n, total uint64
	if _, err := fmt.Sscanf(out[strings.Index(out, "segments "):], "segments %d %d", &n, &total); err != nil {
		t.Fatalf("child said %q: %v", out, err)
	}
	if total > bound || n < 2 {
		t.Errorf("%d segments of %d bytes in all, for a bound of %d", n, total, bound)
	}
	if !strings.Contains(out, "last no-memory") {
		t.Errorf("the bind past the bound: %q, want no-memory", out)
	}
}
