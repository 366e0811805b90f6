package nsbind

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// kernelNeighMessages dumps the IPv4 neighbour table of host h and returns
// the bodies of the kernel's RTM_NEWNEIGH messages.
func kernelNeighMessages(t *testing.T, h *nstest.Host) [][]byte {
	t.Helper()
	var msgs [][]byte
	if err := h.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
		req.AddData(&nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Family: unix.AF_INET}})
		var err error
		msgs, err = req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// TestNeighAnswerBounds: the kernel's answer about B's entry for A is read
// as the kernel wrote it, and that answer cut short at every length, or
// with an attribute's length past the message's end, gives an error or a
// shorter reading, never a panic or a read past the message.
func TestNeighAnswerBounds(t *testing.T) {
	nstest.RequirePrivileged(t)
	rig := nstest.NewPair(t, nstest.Options{})
	if err := rig.B.Ping(rig.A.IPv4); err != nil {
		t.Fatal(err)
	}
	var msg []byte
	for _, m := range kernelNeighMessages(t, rig.B) {
		if idx, dst, _, _, err := neighAnswer(m); err == nil && idx == rig.B.IfIndex && dst == rig.A.IPv4 {
			msg = m
		}
	}
	if msg == nil {
		t.Fatalf("no neighbour message of %v on %d in %s", rig.A.IPv4, rig.B.IfIndex, rig.B.Name)
	}
	_, _, mac, st, err := neighAnswer(msg)
	if err != nil || !bytes.Equal(mac, rig.A.MAC) || !st.Usable() {
		t.Fatalf("kernel's message: mac %v state %v (%v), want %v usable", mac, st, err, rig.A.MAC)
	}
	try := func(what string, b []byte) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s (%d bytes): panic: %v", what, len(b), r)
			}
		}()
		// A copy of exactly its length: a read past it is out of range.
		neighAnswer(bytes.Clone(b))
	}
	for n := range len(msg) {
		try("cut", msg[:n])
	}
	// Each attribute in turn claims more bytes than the message has, and
	// the message is cut in the middle of it.
	for off := unix.SizeofNdMsg; off+unix.SizeofRtAttr <= len(msg); {
		alen := int(binary.NativeEndian.Uint16(msg[off:]))
		for _, bad := range []int{0, 3, len(msg) - off + 1, 0xffff} {
			b := bytes.Clone(msg)
			binary.NativeEndian.PutUint16(b[off:], uint16(bad))
			try("attribute length", b)
		}
		try("cut inside an attribute", msg[:off+unix.SizeofRtAttr+1])
		if alen < unix.SizeofRtAttr {
			t.Fatalf("the kernel's message has an attribute of %d bytes", alen)
		}
		off += (alen + 3) &^ 3
	}
}
