package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// childEnv carries the attach options of a child loader: the test binary
// re-executed, attaching and then waiting to be killed.
const childEnv = "XSESSIOND_LOADER_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild attaches as told by spec (netns path, netns name, interface,
// mode, pin root: "" for the default), prints "ready <program id>" and
// blocks until killed.
func runChild(spec string) int {
	f := strings.Split(spec, "|")
	if len(f) != 5 {
		fmt.Fprintln(os.Stderr, "bad child spec", spec)
		return 2
	}
	mode, err := ParseMode(f[3])
	if err == nil {
		var s *Spec
		if s, err = LoadSpec(); err == nil {
			var o *Objects
			if o, err = s.Load(ObjectsOptions{}); err == nil {
				if _, err = o.Attach(AttachOptions{Netns: f[0], NetnsName: f[1], Interface: f[2], Mode: mode, PinRoot: f[4]}); err == nil {
					info, _ := o.Program().Info()
					id, _ := info.ID()
					fmt.Printf("ready %d\n", id)
					select {}
				}
			}
		}
	}
	fmt.Fprintln(os.Stderr, "child:", err)
	return 1
}

// startKilledChild runs a child loader on h's interface, waits until it has
// attached, SIGKILLs it and returns the id of the program it left behind.
func startKilledChild(t *testing.T, h *nstest.Host, mode Mode) ebpf.ProgramID {
	t.Helper()
	return startKilledChildAt(t, h, mode, "")
}

// startKilledChildAt is startKilledChild with its pins under root.
func startKilledChildAt(t *testing.T, h *nstest.Host, mode Mode, root string) ebpf.ProgramID {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{netnsPath(h), h.Name, h.Link, mode.String(), root}, "|"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child loader: %v", err)
	}
	var id ebpf.ProgramID
	if _, err := fmt.Sscanf(line, "ready %d", &id); err != nil {
		t.Fatalf("child loader said %q", line)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return id
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program id")
	}
	return id
}

// waitGone waits until the kernel has freed program id.
func waitGone(t *testing.T, id ebpf.ProgramID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			p.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("program %d still exists", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSteers sends a datagram from A to B:9000 with a listener on it in
// o's maps and checks that o's program counted the hit.
func checkSteers(t *testing.T, p *nstest.Pair, o *Objects) {
	t.Helper()
	l := listener(flow.TransportUDP, p.B.IPv4, 9000)
	if err := o.Listeners.Put(p.B.IfIndex, l, Value{Handle: 9}); err != nil {
		t.Fatal(err)
	}
	defer o.Listeners.Delete(p.B.IfIndex, l)
	before, _ := o.Counters.Read()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		c, err := dialUDP(p.A, netipAddrPort(p.B.IPv4, 9000))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
		after, _ := o.Counters.Read()
		if after.Sub(before).ListenerExactHit > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the new program did not see the datagram")
}

// TestTakeoverAfterKill: a loader that is SIGKILLed leaves its pinned link
// (and so the program) attached; a new loader takes it over.
func TestTakeoverAfterKill(t *testing.T) {
	for _, c := range []struct {
		name     string
		old, new Mode
		takeover Takeover
		wantMode Mode
	}{
		{"same mode: link updated", ModeNative, ModeAuto, TakeoverLinkUpdated, ModeNative},
		{"generic to native: reattached", ModeGeneric, ModeNative, TakeoverLinkDetached, ModeNative},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := nstest.NewPair(t, nstest.Options{})
			oldID := startKilledChild(t, p.B, c.old)
			x := xdpState(t, p.B)
			if !x.Attached || ebpf.ProgramID(x.ProgId) != oldID {
				t.Fatalf("after the kill: attached %v prog %d, want the child's %d", x.Attached, x.ProgId, oldID)
			}
			if _, err := os.Stat(netnsPinDir(p.B) + "/" + PinLink); err != nil {
				t.Fatalf("no pinned link after the kill: %v", err)
			}

			o := loadObjects(t, ObjectsOptions{})
			att, err := o.Attach(AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name, Mode: c.new})
			if err != nil {
				t.Fatal(err)
			}
			if att.Takeover() != c.takeover || att.Mode() != c.wantMode {
				t.Fatalf("takeover %v in %v mode, want %v in %v mode", att.Takeover(), att.Mode(), c.takeover, c.wantMode)
			}
			checkAttached(t, p.B, o, c.wantMode)
			checkPins(t, att, o)
			waitGone(t, oldID)
			checkSteers(t, p, o)
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			checkDetached(t, p.B)
			if _, err := os.Stat(netnsPinDir(p.B)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("pin directory left after Close: %v", err)
			}
		})
	}
}

func netnsPinDir(h *nstest.Host) string { return DefaultPinRoot + "/" + h.Name + "/" + h.Link }

// passProgram is an XDP_PASS-only program named name.
func passProgram(tb testing.TB, name string) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func netlinkAttach(t *testing.T, h *nstest.Host, p *ebpf.Program, flags int) {
	t.Helper()
	if err := h.Do(func() error {
		l, err := netlink.LinkByIndex(h.IfIndex)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, p.FD(), flags)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTakeoverNetlink: an xsessiond program attached through netlink (no
// link) is replaced; another program is left alone unless Replace is set.
func TestTakeoverNetlink(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	opts := AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name}

	old := loadObjects(t, ObjectsOptions{})
	netlinkAttach(t, p.B, old.Program(), nl.XDP_FLAGS_SKB_MODE)
	oldID := progID(t, old.Program())
	old.Close() // the attachment keeps the program alive

	o := loadObjects(t, ObjectsOptions{})
	att, err := o.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if att.Takeover() != TakeoverNetlink || att.Mode() != ModeNative {
		t.Fatalf("takeover %v in %v mode", att.Takeover(), att.Mode())
	}
	checkAttached(t, p.B, o, ModeNative)
	waitGone(t, oldID)
	if err := att.Close(); err != nil {
		t.Fatal(err)
	}
	checkDetached(t, p.B)

	foreign := passProgram(t, "other_xdp")
	netlinkAttach(t, p.B, foreign, nl.XDP_FLAGS_DRV_MODE)
	if _, err := o.Attach(opts); !errors.Is(err, ErrForeignProgram) || !strings.Contains(err.Error(), "xdp off") {
		t.Fatalf("attach over a foreign program: %v, want ErrForeignProgram saying what to do", err)
	}
	if x := xdpState(t, p.B); ebpf.ProgramID(x.ProgId) != progID(t, foreign) {
		t.Fatalf("the foreign program was touched: now prog %d", x.ProgId)
	}
	opts.Replace = true
	att, err = o.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if att.Takeover() != TakeoverForeign {
		t.Fatalf("takeover %v", att.Takeover())
	}
	checkAttached(t, p.B, o, ModeNative)
	checkSteers(t, p, o)
}

// TestTakeoverLive: a second loader takes over from a live one; the first
// one's Close then leaves the second's attachment and pins alone.
func TestTakeoverLive(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	opts := AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name}
	first := loadObjects(t, ObjectsOptions{})
	if _, err := first.Attach(opts); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Attach(opts); !errors.Is(err, ErrAttached) {
		t.Fatalf("second attach of the same objects: %v, want ErrAttached", err)
	}
	second := loadObjects(t, ObjectsOptions{})
	att, err := second.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if att.Takeover() != TakeoverLinkUpdated {
		t.Fatalf("takeover %v", att.Takeover())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	checkAttached(t, p.B, second, ModeNative)
	checkPins(t, att, second)
	checkSteers(t, p, second)
}

// TestAttachAutoFallback: veth refuses native XDP when it has fewer rx
// queues in use than its peer has tx queues; auto mode falls back to
// generic and says why.
func TestAttachAutoFallback(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	if out, err := exec.Command("ip", "netns", "exec", p.B.Name, "ethtool", "-L", p.B.Link, "rx", "1").CombinedOutput(); err != nil {
		t.Fatalf("ethtool -L %s rx 1: %v: %s", p.B.Link, err, out)
	}
	o := loadObjects(t, ObjectsOptions{})
	opts := AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name, Mode: ModeNative}
	if _, err := o.Attach(opts); err == nil {
		t.Fatal("native attach with 1 rx queue against the peer's 2 tx queues succeeded")
	}
	checkDetached(t, p.B)
	opts.Mode = ModeAuto
	att, err := o.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if att.Mode() != ModeGeneric || att.NativeError() == nil {
		t.Fatalf("auto attached in %v mode (native error %v)", att.Mode(), att.NativeError())
	}
	checkAttached(t, p.B, o, ModeGeneric)
	t.Logf("native refused: %v", att.NativeError())
}

// TestAttachNativeJumbo: the program takes multi-buffer frames, so veth
// takes it in native mode behind a peer whose MTU does not fit a page.
func TestAttachNativeJumbo(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{MTU: 9000})
	o := loadObjects(t, ObjectsOptions{})
	att, err := o.Attach(AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name, Mode: ModeNative})
	if err != nil {
		t.Fatalf("native attach with a 9000-byte peer MTU: %v", err)
	}
	if att.Mode() != ModeNative {
		t.Fatalf("attached in %v mode", att.Mode())
	}
	checkAttached(t, p.B, o, ModeNative)
}

// TestTakeoverWithoutFragmentsPin: a pin folder without the fragments map,
// as a version without the map leaves it, is taken over like any other.
func TestTakeoverWithoutFragmentsPin(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	opts := AttachOptions{Interface: p.B.Link, Netns: netnsPath(p.B), NetnsName: p.B.Name}
	first := loadObjects(t, ObjectsOptions{})
	att, err := first.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.objs.Fragments.Unpin(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(att.PinDir() + "/" + PinFragments); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("fragments pin still there: %v", err)
	}
	second := loadObjects(t, ObjectsOptions{})
	att, err = second.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if att.Takeover() != TakeoverLinkUpdated {
		t.Fatalf("takeover %v", att.Takeover())
	}
	checkPins(t, att, second)
	checkSteers(t, p, second)
}
