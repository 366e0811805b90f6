package api

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Descriptors a client passes where no message takes any (with its Hello,
// with a request, past MaxFDs in one record, with a continuation record,
// with a record too long, with nothing before Hello) are all closed by the
// server: 200 clients doing so leave the server's process no descriptor
// more than it had.
func TestClientDescriptorsClosed(t *testing.T) {
	d := newFakeDaemon(t)
	path, _ := runServer(t, &Server{Logf: func(string, ...any) {}}, d)
	// The descriptors the clients pass: memfds of the test process, which
	// the server's copies duplicate; the test closes its own at the end.
	give := memfds(t, 250)
	defer closeFDs(give)
	before := countFDs(t)

	hello := encode(t, 1, &Hello{Major: VersionMajor})
	show := encode(t, 2, &Show{What: ShowStats})
	cont := encode(t, 3, &Show{What: ShowStats})
	cont[3] |= byte(FlagMore)
	long := append(encode(t, 4, &Show{What: ShowStats}), make([]byte, MaxRecordSize)...)
	cases := []struct {
		name  string
		hello bool   // say Hello first, without descriptors
		rec   []byte // then send this with n descriptors
		n     int
	}{
		{"hello", false, hello, 3},
		{"request", true, show, 5},
		{"over MaxFDs", true, show, 250},
		{"continuation", true, cont, 7},
		{"too long", true, long, 9},
		{"garbage", true, []byte("not a record at all"), 11},
		{"before hello", false, show, 13},
	}
	const rounds = 30
	for _, c := range cases {
		for range rounds {
			fd := rawDial(t, path)
			if c.hello {
				if err := unix.Sendmsg(fd, hello, nil, nil, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Sendmsg(fd, c.rec, unix.UnixRights(give[:c.n]...), nil, 0); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			// Read until the server hangs up or has answered.
			for {
				_, m, err := rawRecv(fd, 5*time.Second)
				if err != nil || m.Type() != TypeHelloReply {
					break
				}
			}
			unix.Close(fd)
		}
	}
	if !waitFor(5*time.Second, func() bool { return allEnded(d) && countFDs(t) <= before }) {
		t.Fatalf("%d descriptors open, %d before the clients came", countFDs(t), before)
	}
}

// allEnded reports whether every connection of d ended.
func allEnded(d *fakeDaemon) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.closed) == len(d.conns)
}
