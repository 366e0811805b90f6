package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

var (
	ep4 = flow.Endpoint{Transport: flow.TransportUDP, Addr: netip.MustParseAddr("10.77.0.1"), Port: 9000, IfIndex: 7, FIB: 3}
	ep6 = flow.Endpoint{Transport: flow.TransportTCP, Addr: netip.MustParseAddr("fd77::2"), Port: 443, IfIndex: 2, FIB: 9}
	epZ = flow.Endpoint{Transport: flow.TransportUDP, Port: 53}
)

// samples returns messages of every type, some types in several shapes.
func samples() []Message {
	return []Message{
		&Hello{Major: 1, Minor: 0, Name: "udpecho"},
		&HelloReply{Major: 1, Minor: 3, Name: "xsessiond"},
		&Error{Code: flow.CodeAddressInUse, Message: "bind udp://0.0.0.0/9000: address already in use"},
		&OK{},
		&Attach{Name: "echo", Namespace: "blue", Secret: 0xdeadbeefcafef00d, Scope: flow.ScopeGlobal | flow.ScopeLocal,
			Proxy: true, ProxyTransports: []flow.Transport{flow.TransportTCP, flow.TransportUDP},
			RxFifoSize: 1 << 16, TxFifoSize: 1 << 17, SegmentSize: 1 << 24, AddSegmentSize: 1 << 22, MaxFifoMemory: 1 << 30},
		&Attach{},
		&AttachReply{AppIndex: 4, Segments: []Segment{{Index: 0, Size: 1 << 24}, {Index: 5, Size: 4096}},
			EventQueue: QueueRef{Segment: 0, Offset: 128, Capacity: 2048}, Workers: 2},
		&Detach{},
		&Bind{URI: "udp://0.0.0.0/9000"},
		&Bind{Endpoint: ep6},
		&BindReply{Handle: flow.MakeHandle(1, 77), Local: ep4},
		&BindReply{Handle: flow.MakeHandle(flow.ListenerWorker, 3), Local: ep4, Worker: 1,
			Rx: FifoRef{Segment: 0, Offset: 8192, Size: 65536}, Tx: FifoRef{Segment: 0, Offset: 73984, Size: 65536}},
		&Unbind{Handle: flow.LocalListenerHandle(flow.TransportUDP, flow.Family4, 9000)},
		&Connect{URI: "tcp://[fd77::1]:80", Endpoint: epZ, Opaque: 12},
		&ConnectReply{SessionInfo{Handle: flow.MakeHandle(2, 9), Worker: 2, Rx: FifoRef{Segment: 1, Offset: 4096, Size: 65536}, Tx: FifoRef{Segment: 1, Offset: 73728, Size: 65536},
			Local: ep4, Remote: ep6}},
		&ConnectReply{SessionInfo{Handle: 5, Rx: FifoRef{Segment: 9, Offset: 0, Size: 1024}, Tx: FifoRef{Segment: 9, Offset: 2048, Size: 1024}, Local: ep4, Remote: ep4,
			CutThrough: true, Segment: Segment{Index: 9, Size: 1 << 20}}},
		&Disconnect{Handle: flow.MakeHandle(3, 1)},
		&SegmentAdded{Segments: []Segment{{Index: 6, Size: 1 << 22}}},
		&SegmentRemoved{Segments: []uint32{6, 7, 8}},
		&Accepted{Listener: flow.MakeHandle(0, 1), SessionInfo: SessionInfo{Handle: 8, Rx: FifoRef{Segment: 10, Offset: 0, Size: 512}, Tx: FifoRef{Segment: 10, Offset: 1024, Size: 512},
			Local: ep6, Remote: ep6, CutThrough: true, Segment: Segment{Index: 10, Size: 8192}}},
		&Shutdown{Reason: "xsessiond is stopping"},
		&Show{What: ShowSessions},
		&ShowReply{JSON: []byte(`{"apps":[]}`)},
		&NsAdd{ID: "blue", Secret: 42, Iface: "veth0", Netns: "xs-a"},
		&NsDel{ID: "blue"},
		&RuleAdd{Rule: Rule{Namespace: "blue", Transport: flow.TransportUDP, Local: netip.MustParsePrefix("10.0.0.0/8"), LocalPort: 53,
			Remote: netip.MustParsePrefix("fd00::/16"), RemotePort: 0, Action: ActionForward, AppIndex: 3,
			Scope: flow.ScopeLocal, Tag: "dns"}},
		&RuleDel{Rule: Rule{Tag: "dns"}},
		&NsSetSecret{ID: "blue", Secret: 43},
		&StatsClear{},
		&Capture{Listener: flow.MakeHandle(0, 1), Session: flow.MakeHandle(1, 2), App: 3, Reason: "fifo_full",
			Count: 100, Duration: 5000, Snaplen: 128},
		&Capture{},
		&CaptureReply{},
		&RuleDel{ID: 7},
		&CloseWrite{Handle: flow.MakeHandle(3, 2)},
		&SetKeepalive{Handle: flow.MakeHandle(3, 2), Enabled: true, Idle: 2 * time.Second, Interval: 500 * time.Millisecond, Count: 4},
		&SetKeepalive{Handle: flow.MakeHandle(1, 9)},
		&RuleAddReply{ID: 7},
		&PathMTU{Handle: flow.MakeHandle(2, 5), Remote: netip.MustParseAddr("10.77.0.2")},
		&PathMTU{Handle: flow.MakeHandle(flow.ListenerWorker, 3), Remote: netip.MustParseAddr("fd77::2")},
		&PathMTU{},
		&PathMTUReply{MTU: 1280},
		&SleepFlags{},
		&SleepFlagsReply{},
		&Abort{Handle: flow.MakeHandle(1, 9)},
		&Membership{Handle: flow.MakeHandle(flow.ListenerWorker, 3), Group: netip.MustParseAddr("239.1.2.3"), Iface: "veth0"},
		&Membership{Handle: flow.MakeHandle(flow.ListenerWorker, 4), Group: netip.MustParseAddr("ff0e::1:3"), Leave: true},
		&Membership{},
		&Show{What: ShowSessions, After: 0x1_0000_0042, Limit: ShowPage},
		&Show{What: ShowListeners, After: 7},
	}
}

func encode(t testing.TB, id uint32, m Message) []byte {
	t.Helper()
	b, err := AppendRecord(nil, id, 0, m)
	if err != nil {
		t.Fatalf("encode %v: %v", m.Type(), err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for i, m := range samples() {
		t.Run(fmt.Sprintf("%d-%v", i, m.Type()), func(t *testing.T) {
			seen[m.Type()] = true
			rec := encode(t, uint32(i+1), m)
			h, got, err := Decode(rec)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if h.Type != m.Type() || h.ID != uint32(i+1) || h.Version != VersionMajor || int(h.Length) != len(rec)-HeaderSize {
				t.Fatalf("header %+v", h)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, m)
			}
			again := encode(t, uint32(i+1), got)
			if !bytes.Equal(again, rec) {
				t.Fatalf("re-encoding differs")
			}
			if got.FDs() != m.FDs() {
				t.Fatalf("FDs %d, want %d", got.FDs(), m.FDs())
			}
		})
	}
	for ty := range typeNames {
		if !seen[ty] {
			t.Errorf("no sample of %v", ty)
		}
		if newMessage(ty) == nil || newMessage(ty).Type() != ty {
			t.Errorf("newMessage(%v) wrong", ty)
		}
	}
}

func TestAppendRecordKeepsPrefix(t *testing.T) {
	prefix := []byte("abc")
	b, err := AppendRecord(prefix, 1, 0, &OK{})
	if err != nil || !bytes.Equal(b[:3], prefix) || len(b) != 3+HeaderSize {
		t.Fatalf("got %q, %v", b, err)
	}
	b, err = AppendRecord(prefix, 1, 0, &NsDel{ID: strings.Repeat("x", MaxNameLen+1)})
	if err == nil || !bytes.Equal(b, prefix) {
		t.Fatalf("failed encode left %q, %v", b, err)
	}
}

func TestEncodeLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name string
		m    Message
		want error
	}{
		{"name at limit", &Hello{Name: long(MaxNameLen)}, nil},
		{"name too long", &Hello{Name: long(MaxNameLen + 1)}, ErrFieldTooLong},
		{"uri too long", &Bind{URI: long(MaxURILen + 1)}, ErrFieldTooLong},
		{"iface too long", &NsAdd{Iface: long(MaxIfaceLen + 1)}, ErrFieldTooLong},
		{"message too long", &Error{Message: long(MaxMessageLen + 1)}, ErrFieldTooLong},
		{"bad utf8", &NsDel{ID: "\xff"}, ErrMalformed},
		{"proxy list too long", &Attach{ProxyTransports: make([]flow.Transport, MaxProxyTransports+1)}, ErrFieldTooLong},
		{"attach segments too many", &AttachReply{Segments: make([]Segment, MaxSegmentFDs+1)}, ErrFieldTooLong},
		{"attach workers too many", &AttachReply{Workers: MaxKickFDs + 1}, ErrFieldTooLong},
		{"shutdown reason too long", &Shutdown{Reason: long(MaxReasonLen + 1)}, ErrFieldTooLong},
		{"segment added empty", &SegmentAdded{}, ErrMalformed},
		{"segment added too many", &SegmentAdded{Segments: make([]Segment, MaxFDs+1)}, ErrFieldTooLong},
		{"segment removed too many", &SegmentRemoved{Segments: make([]uint32, MaxSegmentIDs+1)}, ErrFieldTooLong},
		{"json one record", &ShowReply{JSON: make([]byte, maxShowChunk)}, nil},
		{"json too long for a record", &ShowReply{JSON: make([]byte, maxShowChunk+1)}, ErrFieldTooLong},
		{"negative ifindex", &Bind{Endpoint: flow.Endpoint{IfIndex: -1}}, ErrMalformed},
		{"segment without cut-through", &ConnectReply{SessionInfo{Segment: Segment{Index: 1}}}, ErrMalformed},
		{"bad prefix", &RuleAdd{Rule: Rule{Local: netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 33)}}, ErrMalformed},
	}
	for _, c := range cases {
		_, err := AppendRecord(nil, 1, 0, c.m)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		if c.want != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v is not ErrMalformed", c.name, err)
		}
	}
	if _, err := AppendRecord(nil, 1, FlagMore, &OK{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("FlagMore on OK: %v", err)
	}
	if _, err := AppendRecord(nil, 1, 0x80, &OK{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown flag: %v", err)
	}
}

// malformedCases are records Decode must refuse, each with the sentinel it
// must match (all also match ErrMalformed).
func malformedCases(t testing.TB) []struct {
	name string
	rec  []byte
	want error
} {
	ok := encode(t, 7, &OK{})
	nsdel := encode(t, 7, &NsDel{ID: "blue"})
	withBody := func(ty Type, body []byte) []byte {
		b := make([]byte, HeaderSize, HeaderSize+len(body))
		putHeader(b, Header{Version: VersionMajor, Type: ty, ID: 7, Length: uint32(len(body))})
		return append(b, body...)
	}
	mut := func(b []byte, f func([]byte)) []byte {
		b = bytes.Clone(b)
		f(b)
		return b
	}
	u16 := func(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }
	str := func(n int) []byte { return append(u16(n), bytes.Repeat([]byte("a"), n)...) }
	attach := encode(t, 7, &Attach{})
	// offset of the proxy list count in an empty Attach body: two empty
	// strings (2+2), secret 8, scope 1, proxy 1.
	const proxyOff = HeaderSize + 2 + 2 + 8 + 1 + 1
	bind := encode(t, 7, &Bind{Endpoint: ep4})
	const famOff = HeaderSize + 2 + 1 // after the empty URI and the transport
	attachReply := encode(t, 7, &AttachReply{})
	// A BindReply ends with its Rx and Tx refs (segment 4, offset 8, size 4
	// bytes each); byte 11 from the end of Rx's is its offset's top byte.
	bindReply := encode(t, 7, &BindReply{Local: ep4, Rx: FifoRef{Segment: 1, Offset: 4096, Size: 512}})
	// A PathMTU is the handle (8 bytes), then the remote address.
	pmtu := encode(t, 7, &PathMTU{Handle: 9, Remote: netip.MustParseAddr("10.77.0.2")})
	const pmtuFamOff = HeaderSize + 8
	// A SetKeepalive is the handle (8 bytes), enabled (1), then Idle and
	// Interval (8 each, little-endian): their top bytes at +8 and +16.
	keepalive := encode(t, 7, &SetKeepalive{Handle: 9, Enabled: true, Idle: time.Second, Interval: time.Second})
	const idleTop = HeaderSize + 8 + 1 + 7
	// A Membership is the handle (8 bytes), the group (family 1, address
	// 16), the interface (length 2, bytes), then Leave (1).
	member := encode(t, 7, &Membership{Handle: 9, Group: netip.MustParseAddr("239.1.2.3"), Iface: "eth0"})
	const memberFamOff = HeaderSize + 8
	const memberIfaceOff = memberFamOff + 1 + 16
	return []struct {
		name string
		rec  []byte
		want error
	}{
		{"fifo offset over 32 bits", mut(bindReply, func(b []byte) { b[len(b)-32+11] = 1 }), ErrFieldTooLong},
		{"empty", nil, ErrMalformed},
		{"truncated header", ok[:HeaderSize-1], ErrMalformed},
		{"bad magic", mut(ok, func(b []byte) { b[0] ^= 0xff }), ErrMalformed},
		{"bad version", mut(ok, func(b []byte) { b[2] = VersionMajor + 1 }), ErrVersion},
		{"unknown flags", mut(ok, func(b []byte) { b[3] = 0x40 }), ErrMalformed},
		{"more on OK", mut(ok, func(b []byte) { b[3] = byte(FlagMore) }), ErrMalformed},
		{"reserved bits", mut(ok, func(b []byte) { b[6] = 1 }), ErrMalformed},
		{"unknown type", mut(ok, func(b []byte) { b[4] = 0xee }), ErrUnknownType},
		{"unknown type zero", mut(ok, func(b []byte) { b[4] = 0 }), ErrUnknownType},
		{"length says more", mut(nsdel, func(b []byte) { b[12]++ }), ErrMalformed},
		{"length says less", mut(nsdel, func(b []byte) { b[12]-- }), ErrMalformed},
		{"record cut", nsdel[:len(nsdel)-1], ErrMalformed},
		{"oversized", withBody(TypeShowReply, make([]byte, MaxBodySize+1)), ErrTooLarge},
		{"body ends in field", withBody(TypeUnbind, []byte{1, 2, 3}), ErrMalformed},
		{"trailing bytes", withBody(TypeOK, []byte{0}), ErrMalformed},
		{"string too long", withBody(TypeNsDel, str(MaxNameLen+1)), ErrFieldTooLong},
		{"string length past body", withBody(TypeNsDel, u16(10)), ErrMalformed},
		{"string not utf8", withBody(TypeNsDel, append(u16(1), 0xff)), ErrMalformed},
		{"list too long", mut(attach, func(b []byte) { b[proxyOff] = MaxProxyTransports + 1 }), ErrFieldTooLong},
		{"list past body", mut(attach, func(b []byte) { b[proxyOff] = 3 }), ErrMalformed},
		{"segment list empty", withBody(TypeSegmentAdded, u16(0)), ErrMalformed},
		{"removed list too long", withBody(TypeSegmentRemoved, u16(MaxSegmentIDs+1)), ErrFieldTooLong},
		{"json longer than record", withBody(TypeShowReply, binary.LittleEndian.AppendUint32(nil, maxShowChunk+1)), ErrFieldTooLong},
		{"bad bool", mut(attach, func(b []byte) { b[proxyOff-1] = 2 }), ErrMalformed},
		{"bad family", mut(bind, func(b []byte) { b[famOff] = 5 }), ErrMalformed},
		{"v4 padding", mut(bind, func(b []byte) { b[famOff+1+15] = 1 }), ErrMalformed},
		{"no-address padding", mut(bind, func(b []byte) { b[famOff] = 0 }), ErrMalformed},
		{"attach workers too many", mut(attachReply, func(b []byte) { b[len(b)-1] = MaxKickFDs + 1 }), ErrFieldTooLong},
		{"ifindex out of range", mut(bind, func(b []byte) { b[famOff+1+16+2+3] = 0x80 }), ErrMalformed},
		{"path mtu bad family", mut(pmtu, func(b []byte) { b[pmtuFamOff] = 5 }), ErrMalformed},
		{"path mtu v4 padding", mut(pmtu, func(b []byte) { b[pmtuFamOff+1+4] = 1 }), ErrMalformed},
		{"path mtu cut", pmtu[:len(pmtu)-1], ErrMalformed},
		{"path mtu reply trailing", withBody(TypePathMTUReply, []byte{0, 5, 0, 0, 1}), ErrMalformed},
		{"keepalive idle past int64", mut(keepalive, func(b []byte) { b[idleTop] = 0x80 }), ErrMalformed},
		{"keepalive interval past int64", mut(keepalive, func(b []byte) { b[idleTop+8] = 0xff }), ErrMalformed},
		{"sleep flags trailing", withBody(TypeSleepFlags, []byte{1}), ErrMalformed},
		{"sleep flags reply trailing", withBody(TypeSleepFlagsReply, []byte{1}), ErrMalformed},
		{"membership bad family", mut(member, func(b []byte) { b[memberFamOff] = 5 }), ErrMalformed},
		{"membership v4 padding", mut(member, func(b []byte) { b[memberFamOff+1+4] = 1 }), ErrMalformed},
		{"membership interface too long", mut(member, func(b []byte) { b[memberIfaceOff] = MaxIfaceLen + 1 }), ErrFieldTooLong},
		{"membership interface not utf8", mut(member, func(b []byte) { b[memberIfaceOff+2] = 0xff }), ErrMalformed},
		{"membership bad bool", mut(member, func(b []byte) { b[len(b)-1] = 2 }), ErrMalformed},
		{"membership cut", member[:len(member)-1], ErrMalformed},
		{"membership trailing", append(mut(member, func(b []byte) { b[12]++ }), 0), ErrMalformed},
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, c := range malformedCases(t) {
		h, m, err := Decode(c.rec)
		if err == nil || m != nil {
			t.Errorf("%s: accepted (%v)", c.name, m)
			continue
		}
		if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want %v and ErrMalformed", c.name, err, c.want)
		}
		if len(c.rec) >= HeaderSize && h.ID != 7 {
			t.Errorf("%s: header id %d, want 7", c.name, h.ID)
		}
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	rec := encode(t, 1, &ShowReply{JSON: []byte("{}")})
	_, m, err := Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rec {
		rec[i] = 0
	}
	if string(m.(*ShowReply).JSON) != "{}" {
		t.Fatalf("decoded message aliases the record")
	}
}

func TestErrorCodes(t *testing.T) {
	for c := flow.CodeNotAttached; c <= flow.CodeConnect; c++ {
		want, ok := c.Err()
		if !ok || want == nil {
			t.Fatalf("code %d has no sentinel", c)
		}
		src := fmt.Errorf("doing something: %w", want)
		rec := encode(t, 3, ErrorReply(src))
		_, m, err := Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		got := m.(*Error).Err()
		if !errors.Is(got, want) || !errors.Is(got, ErrRemote) {
			t.Errorf("code %d: %v does not match %v and ErrRemote", c, got, want)
		}
		if got.Error() != src.Error() {
			t.Errorf("code %d: text %q, want %q", c, got.Error(), src.Error())
		}
		var re *RemoteError
		if !errors.As(got, &re) || re.Code != c {
			t.Errorf("code %d: %#v", c, got)
		}
	}
	other := ErrorReply(errors.New("disk on fire"))
	if other.Code != flow.CodeUnknown {
		t.Fatalf("code %d", other.Code)
	}
	if err := other.Err(); errors.Unwrap(err) != nil || !errors.Is(err, ErrRemote) || err.Error() != "disk on fire" {
		t.Fatalf("unknown: %v", err)
	}
	// An unknown future code keeps its text and matches no sentinel.
	future := (&Error{Code: 999}).Err()
	if errors.Unwrap(future) != nil || future.Error() == "" {
		t.Fatalf("future code: %v", future)
	}
	// Long and invalid texts are cut so the reply always encodes.
	long := ErrorReply(errors.New(strings.Repeat("é", MaxMessageLen) + "\xff"))
	if _, err := AppendRecord(nil, 1, 0, long); err != nil {
		t.Fatalf("long error does not encode: %v", err)
	}
}

func TestShowWhat(t *testing.T) {
	for w := ShowApps; w <= ShowStats; w++ {
		got, err := ParseShowWhat(w.String())
		if err != nil || got != w {
			t.Errorf("%v: %v %v", w, got, err)
		}
	}
	if _, err := ParseShowWhat("bogus"); !errors.Is(err, flow.ErrInvalidValue) {
		t.Errorf("bogus: %v", err)
	}
}
