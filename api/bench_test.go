package api

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// The subject: a request/reply round trip through Client.Call and Server
// over a listening socket (Unbind → OK: a 24-byte request, a 16-byte
// reply). Beside it: the same exchange at the Conn level without Client
// and Server, and the baselines, a raw seqpacket echo of the same bytes
// through blocking syscalls and through the Go poller.

type okHandler struct{}

func (okHandler) Open(*Conn, *Hello) (ConnHandler, error) { return okConn{}, nil }

type okConn struct{}

func (okConn) Handle(context.Context, Request) (Message, []int, error) { return &OK{}, nil, nil }
func (okConn) Close(error)                                             {}

func BenchmarkCall(b *testing.B) {
	path := sockPath(b)
	l, err := Listen(path, ListenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&Server{Handler: okHandler{}}).Serve(ctx, l); close(done) }()
	defer func() { cancel(); <-done }()
	cl, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	req := &Unbind{Handle: 77}
	bg := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := cl.Call(bg, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConnRoundTrip(b *testing.B) {
	a, s, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	go func() {
		defer s.Close()
		ok := &OK{}
		for {
			id, _, _, err := s.RecvID()
			if err != nil {
				return
			}
			if s.SendID(id, ok) != nil {
				return
			}
		}
	}()
	req := &Unbind{Handle: 77}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := a.SendID(uint32(i+1), req); err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := a.RecvID(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRecords(b *testing.B) (req, reply []byte) {
	return encode(b, 1, &Unbind{Handle: 77}), encode(b, 1, &OK{})
}

func BenchmarkBaselineRawSeqpacketEcho(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	req, reply := benchRecords(b)
	go func() {
		defer unix.Close(fds[1])
		buf := make([]byte, MaxRecordSize)
		for {
			if n, err := unix.Read(fds[1], buf); err != nil || n == 0 {
				return
			}
			if _, err := unix.Write(fds[1], reply); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, MaxRecordSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := unix.Write(fds[0], req); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fds[0], buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	unix.Shutdown(fds[0], unix.SHUT_RDWR)
}

func BenchmarkBaselinePollerSeqpacketEcho(b *testing.B) {
	a, s, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	req, reply := benchRecords(b)
	go func() {
		defer s.Close()
		buf := make([]byte, MaxRecordSize)
		for {
			if n, err := s.uc.Read(buf); err != nil || n == 0 {
				return
			}
			if _, err := s.uc.Write(reply); err != nil {
				return
			}
		}
	}()
	var c net.Conn = a.uc
	buf := make([]byte, MaxRecordSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeAttachReply(b *testing.B) {
	m := samples()[6]
	buf := make([]byte, 0, MaxRecordSize)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = AppendRecord(buf[:0], 1, 0, m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAttachReply(b *testing.B) {
	rec := encode(b, 1, samples()[6])
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := Decode(rec); err != nil {
			b.Fatal(err)
		}
	}
}
