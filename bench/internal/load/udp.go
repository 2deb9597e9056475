package load

import "encoding/binary"

const (
	// batchSize is the number of datagrams per recvmmsg/sendmmsg call.
	batchSize = 64
	// socketBufferBytes is the SO_RCVBUF and SO_SNDBUF size requested for
	// each UDP socket. The kernel caps it at net.core.rmem_max and
	// net.core.wmem_max.
	socketBufferBytes = 4 << 20
	// maxDatagram is the receive buffer per datagram. A longer datagram is
	// cut to this size.
	maxDatagram = 2048
)

// arrivalOf returns the arrival of a datagram read at runner time read
// whose control messages are oob. Without a kernel timestamp the datagram is
// stamped at the read, and counted if the socket should have had one.
func (f *flow) arrivalOf(oob []byte, read int64) arrival {
	if !f.r.kernelRx {
		return readNow(read)
	}
	wall, ok := parseRxTimestamp(oob)
	if !ok {
		if f.r.inWindow(read) {
			f.st.noRxStamp++
		}
		return readNow(read)
	}
	// The kernel stamped the datagram before the read, so a later stamp
	// can only come from the error of wallOffset. Clamp it to the read.
	return arrival{stamp: min(f.r.fromWallClock(wall), read), read: read}
}

func (f *flow) onDatagram(b []byte, at arrival) {
	switch p := f.proto.(type) {
	case *echoProto:
		if len(b) < 8 {
			f.count("short")
			return
		}
		f.complete(int(binary.BigEndian.Uint32(b)), binary.BigEndian.Uint32(b[4:]), "echo", at)
	case *coapProto:
		p.onResponse(f, b, at)
	}
}

// echoProto sends datagrams of cfg.Payload bytes that start with the slot
// index and generation; an echo server returns them unchanged.
type echoProto struct{ size int }

func (p *echoProto) fill(_ *flow, i int, s *slot) {
	if s.buf == nil {
		s.buf = make([]byte, p.size)
	}
	binary.BigEndian.PutUint32(s.buf, uint32(i))
	binary.BigEndian.PutUint32(s.buf[4:], s.gen)
}

func (p *echoProto) retransmits() bool { return false }
