package daemon

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// validRequests are well-formed requests to mutate.
func validRequests() []api.Message {
	return []api.Message{
		&api.Hello{Major: api.VersionMajor, Name: "fuzz"},
		&api.Attach{Name: "fuzz", Scope: flow.ScopeGlobal | flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096},
		&api.Bind{URI: "udp://0.0.0.0:7000"},
		&api.Bind{Endpoint: flow.Endpoint{Transport: flow.TransportUDP, Addr: netip.MustParseAddr("127.0.0.1"), Port: 7001}},
		&api.Unbind{Handle: flow.MakeHandle(flow.ListenerWorker, 1)},
		&api.Connect{URI: "udp://127.0.0.1:9000", Opaque: 3},
		&api.Disconnect{Handle: flow.MakeHandle(flow.CutThroughWorker, 0)},
		&api.Abort{Handle: flow.MakeHandle(flow.CutThroughWorker, 1)},
		&api.CloseWrite{Handle: flow.MakeHandle(flow.CutThroughWorker, 0)},
		&api.SetKeepalive{Handle: flow.MakeHandle(flow.CutThroughWorker, 1), Enabled: true},
		&api.Show{What: api.ShowApps},
		&api.NsAdd{ID: "f", Secret: 1, Iface: "lo"},
		&api.NsDel{ID: "f"},
		&api.RuleAdd{Rule: api.Rule{Transport: flow.TransportUDP, Action: api.ActionDrop, Tag: "f", LocalPort: 1}},
		&api.RuleDel{Rule: api.Rule{Tag: "f"}},
		&api.Detach{},
	}
}

// TestSocketFuzz sends 10,000 random and mutated records to the daemon
// from other connections while an app keeps echoing through a cut-through
// session; the echo must stay correct, the daemon must keep serving, and
// nothing the fuzzing connections made may be left behind.
func TestSocketFuzz(t *testing.T) {
	d := startDaemon(t)
	c := echoPair(t, d)
	// leakcheck: the set of descriptors, polled until it settles.
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true})

	stop := make(chan struct{})
	var echoes int
	var echoErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1+i%300)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(msg); err != nil {
				echoErr = err
				return
			}
			n, err := c.Read(buf)
			if err != nil {
				echoErr = err
				return
			}
			if !bytes.Equal(buf[:n], msg) {
				echoErr = errEcho
				return
			}
			echoes++
		}
	}()

	const total = 10000
	const workers = 4
	var sent sync.WaitGroup
	for w := range workers {
		sent.Add(1)
		go func() {
			defer sent.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			reqs := validRequests()
			var conn *net.UnixConn
			for i := 0; i < total/workers; i++ {
				if conn == nil {
					var err error
					conn, err = net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: d.Socket(), Net: "unixpacket"})
					if err != nil {
						t.Errorf("dial: %v", err)
						return
					}
					if rng.IntN(2) == 0 { // half the connections say Hello first
						rec, _ := api.AppendRecord(nil, 1, 0, &api.Hello{Major: api.VersionMajor, Name: "fuzz"})
						conn.Write(rec)
					}
				}
				var rec []byte
				switch rng.IntN(3) {
				case 0: // random bytes
					rec = make([]byte, rng.IntN(200))
					for j := range rec {
						rec[j] = byte(rng.Uint32())
					}
				default: // a valid record, mutated
					m := reqs[rng.IntN(len(reqs))]
					rec, _ = api.AppendRecord(nil, uint32(i+2), 0, m)
					for k := rng.IntN(4); k > 0 && len(rec) > 0; k-- {
						switch rng.IntN(3) {
						case 0:
							rec[rng.IntN(len(rec))] = byte(rng.Uint32())
						case 1:
							rec = rec[:rng.IntN(len(rec))]
						case 2:
							rec = append(rec, byte(rng.Uint32()))
						}
					}
				}
				if len(rec) == 0 {
					rec = []byte{0}
				}
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := conn.Write(rec); err != nil {
					conn.Close()
					conn = nil
					continue
				}
				// Read what comes back (a reply, an error, or the close).
				buf := make([]byte, api.MaxRecordSize)
				oob := make([]byte, 4096)
				n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
				closeRights(oob[:oobn])
				if err != nil || n == 0 || rng.IntN(8) == 0 {
					conn.Close()
					conn = nil
				}
			}
			if conn != nil {
				conn.Close()
			}
		}()
	}
	sent.Wait()
	close(stop)
	wg.Wait()
	if echoErr != nil {
		t.Fatalf("echo broke during the fuzzing (after %d echoes): %v", echoes, echoErr)
	}
	if echoes == 0 {
		t.Fatal("no echo went through during the fuzzing")
	}
	t.Logf("%d records sent, %d echoes meanwhile", total, echoes)
	// Everything the fuzzing connections attached, bound or added is gone.
	waitFor(t, "fuzz connections to go", 5*time.Second, func() bool { return len(d.layer.Apps()) == 2 })
	d.layer.DelRulesByTag("f")
	d.DelNamespace("f")
	if n := len(d.layer.Listeners()); n != 2 { // the echo's listener, global and local entries
		t.Errorf("%d listeners left, want the echo app's: %+v", n, d.layer.Listeners())
	}
	if !leaks.Check(t) {
		t.Fatalf("descriptors left by the fuzzing; apps %+v", d.layer.Apps())
	}
	// And the app still works.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("still there")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "still there" {
		t.Fatalf("after fuzzing: %q %v", buf[:n], err)
	}
}
