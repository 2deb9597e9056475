//go:build linux

package load

import (
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message with x/sys's struct cmsghdr, padded to
// its full space as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// timestampMsg builds an SCM_TIMESTAMPNS message carrying ns.
func timestampMsg(ns int64) []byte {
	ts := unix.NsecToTimespec(ns)
	return cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS,
		unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)))
}

func TestParseRxTimestamp(t *testing.T) {
	const want = int64(1_700_000_123_456_789_012)
	good := timestampMsg(want)
	rights := unix.UnixRights(3, 4, 5) // an SCM_RIGHTS message of 12 data bytes
	for _, tc := range []struct {
		name   string
		oob    []byte
		wantOK bool
	}{
		{"timestamp alone", good, true},
		{"timestamp after another message", append(append([]byte(nil), rights...), good...), true},
		{"timestamp before another message", append(append([]byte(nil), good...), rights...), true},
		{"two timestamps, first wins", append(append([]byte(nil), good...), timestampMsg(5)...), true},
		{"empty", nil, false},
		{"header cut short", good[:cmsgHdrLen-1], false},
		{"payload cut short", good[:len(good)-4], false},
		{"length past buffer", append(append([]byte(nil), rights...), good[:cmsgHdrLen+4]...), false},
		{"wrong level", cmsg(unix.IPPROTO_IP, unix.SCM_TIMESTAMPNS, good[cmsgHdrLen:]), false},
		{"wrong type", cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMP, good[cmsgHdrLen:]), false},
		{"other message only", rights, false},
		{"zero length header", make([]byte, 2*cmsgHdrLen), false},
	} {
		got, ok := parseRxTimestamp(tc.oob)
		if ok != tc.wantOK {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.wantOK)
			continue
		}
		if ok && got != want {
			t.Errorf("%s: got %d ns, want %d", tc.name, got, want)
		}
	}
}

func TestParseRxTimestampAllocatesNothing(t *testing.T) {
	oob := append(unix.UnixRights(3), timestampMsg(42)...)
	allocs := testing.AllocsPerRun(100, func() { _, _ = parseRxTimestamp(oob) })
	if allocs != 0 {
		t.Errorf("parseRxTimestamp allocates %.0f times per call, want 0", allocs)
	}
}

func TestRxOOBLenFitsTimestamp(t *testing.T) {
	if need := unix.CmsgSpace(timespecLen); rxOOBLen < need {
		t.Errorf("rxOOBLen %d, want at least CMSG_SPACE(timespec) = %d", rxOOBLen, need)
	}
}

// A datagram sent over loopback to a socket with SO_TIMESTAMPNS on carries
// a wall-clock receive time between the send and the read.
func TestKernelRxTimestampOnLoopback(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := enableRxTimestamps(srv); err != nil {
		t.Fatalf("enable SO_TIMESTAMPNS: %v", err)
	}
	cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	before := time.Now().UnixNano()
	if _, err := cli.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf, oob := make([]byte, 64), make([]byte, rxOOBLen)
	_, oobn, _, _, err := srv.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixNano()
	got, ok := parseRxTimestamp(oob[:oobn])
	if !ok {
		t.Fatalf("no SCM_TIMESTAMPNS in %d control bytes", oobn)
	}
	if got < before || got > after {
		t.Errorf("receive time %d outside [%d, %d], the send and the read", got, before, after)
	}
}

func TestArrivalOf(t *testing.T) {
	r := &runner{base: time.Now(), endNs: 1 << 62, kernelRx: true}
	r.wallOffset.Store(1_000_000)
	f := newFlow(r, 0, 1, &echoProto{size: 16})

	if at := f.arrivalOf(timestampMsg(1_000_500), 900); at != (arrival{stamp: 500, read: 900}) {
		t.Errorf("kernel-stamped arrival %+v, want stamp 500 read 900", at)
	}
	if at := f.arrivalOf(timestampMsg(1_002_000), 900); at.stamp != 900 {
		t.Errorf("stamp after the read gave %+v, want it clamped to 900", at)
	}
	if f.st.noRxStamp != 0 {
		t.Errorf("noRxStamp %d after stamped datagrams, want 0", f.st.noRxStamp)
	}
	if at := f.arrivalOf(nil, 700); at != readNow(700) {
		t.Errorf("unstamped arrival %+v, want the read time 700", at)
	}
	if f.st.noRxStamp != 1 {
		t.Errorf("noRxStamp %d after one unstamped datagram, want 1", f.st.noRxStamp)
	}

	r.kernelRx = false
	if at := f.arrivalOf(timestampMsg(1_000_500), 900); at != readNow(900) {
		t.Errorf("arrival %+v on a user-clock run, want the read time 900", at)
	}
	if f.st.noRxStamp != 1 {
		t.Errorf("noRxStamp %d on a user-clock run, want it unchanged at 1", f.st.noRxStamp)
	}
}
