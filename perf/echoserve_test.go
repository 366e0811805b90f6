package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestEchoServeProtocol runs echoserve's loop in this process with the
// kernel echo on loopback: it echoes, answers every command with one line
// (an unknown one with an error line), and quit stops the server.
func TestEchoServeProtocol(t *testing.T) {
	// runEchoServe sets the process's options and capture hook, as the
	// echoserve process does: give them back after.
	savedOpts, savedNote := xsOptions, xsCaptureNote
	t.Cleanup(func() { xsOptions, xsCaptureNote = savedOpts, savedNote })
	// A free port: bind one, note it, let it go.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	env, _ := json.Marshal(&Env{Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(port), Queues: 1, Flows: 1, Payload: 64})

	inR, inW := io.Pipe()
	lines := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- runEchoServe(ImplKernel, string(env), "{}", inR, func(f string, a ...any) { lines <- fmt.Sprintf(f, a...) })
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no reply from echoserve")
		}
		return ""
	}
	if l := next(); l != "ready" {
		t.Fatalf("first line %q, want ready", l)
	}

	c, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("echo me")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}

	for _, tc := range []struct{ cmd, want string }{
		{"drops", "{}"},
		{"breakdown", `{"echo-server-enobufs":0}`},
		{"statsline", ""},
		{"nonsense", `error unknown command "nonsense"`},
		{"quit", "{}"},
	} {
		if _, err := io.WriteString(inW, tc.cmd+"\n"); err != nil {
			t.Fatal(err)
		}
		if l := next(); l != tc.want {
			t.Errorf("%s: %q, want %q", tc.cmd, l, tc.want)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("after quit: %v", err)
	}
	// The server is gone: its port is free again.
	pc, err = net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("port still held after quit: %v", err)
	}
	pc.Close()
}

// TestEchoServeBadEnv: a malformed --env is refused before anything starts.
func TestEchoServeBadEnv(t *testing.T) {
	err := runEchoServe(ImplKernel, "{not json", "{}", strings.NewReader(""), func(string, ...any) { t.Error("replied") })
	if err == nil || !strings.Contains(err.Error(), "--env") {
		t.Fatalf("got %v, want an --env error", err)
	}
}

// TestCapBufferBrief: a child's long stderr is cut to its start (a
// panic's message) and its end, not to its end alone.
func TestCapBufferBrief(t *testing.T) {
	c := &capBuffer{max: 1 << 20}
	fmt.Fprintf(c, "panic: runtime error: the reason\n\ngoroutine 1 [running]:\n")
	for i := range 2000 {
		fmt.Fprintf(c, "main.frame%d()\n\t/src/file.go:%d +0x1f\n", i, i)
	}
	fmt.Fprintf(c, "exit status 2\n")
	b := c.brief(2000)
	if !strings.HasPrefix(b, "panic: runtime error: the reason") || !strings.HasSuffix(b, "exit status 2") || len(b) > 2100 {
		t.Fatalf("brief (%d bytes): %q", len(b), b)
	}
	short := &capBuffer{max: 100}
	fmt.Fprintf(short, "  fatal: short  \n")
	if got := short.brief(2000); got != "fatal: short" {
		t.Fatalf("short: %q", got)
	}
}
