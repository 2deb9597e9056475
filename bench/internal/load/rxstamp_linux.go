//go:build linux

package load

import (
	"encoding/binary"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layout of a control message (cmsg(3)): a struct cmsghdr of a size_t
// length and two ints (level, type), then the data. The header and each
// message are padded to a multiple of sizeof(long).
const (
	cmsgAlignTo = unix.SizeofPtr
	cmsgHdrLen  = (unix.SizeofCmsghdr + cmsgAlignTo - 1) &^ (cmsgAlignTo - 1)
	timespecLen = int(unsafe.Sizeof(unix.Timespec{}))
	// rxOOBLen is the control buffer of one received datagram. It has
	// room for the SCM_TIMESTAMPNS message and one more of the same size.
	rxOOBLen = 2 * (cmsgHdrLen + timespecLen)
)

// enableRxTimestamps sets SO_TIMESTAMPNS on c, so that each datagram read
// from it carries the kernel's receive time (socket(7)).
func enableRxTimestamps(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = setRxTimestamps(int(fd))
	})
	if err != nil {
		return err
	}
	return serr
}

// setRxTimestamps sets SO_TIMESTAMPNS on the socket fd.
func setRxTimestamps(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fmt.Errorf("setsockopt SO_TIMESTAMPNS: %w", err)
	}
	return nil
}

// parseRxTimestamp returns the time of the first SCM_TIMESTAMPNS control
// message in oob, in ns of CLOCK_REALTIME. The payload is the kernel's
// native struct timespec, the layout of unix.Timespec. The parser reads
// the headers in place, so unlike unix.ParseSocketControlMessage it does
// not allocate.
func parseRxTimestamp(oob []byte) (int64, bool) {
	for len(oob) >= cmsgHdrLen {
		var msgLen uint64
		if unix.SizeofPtr == 8 {
			msgLen = binary.NativeEndian.Uint64(oob)
		} else {
			msgLen = uint64(binary.NativeEndian.Uint32(oob))
		}
		if msgLen < cmsgHdrLen || msgLen > uint64(len(oob)) {
			return 0, false // truncated or corrupt: later headers cannot be found
		}
		level := int32(binary.NativeEndian.Uint32(oob[unix.SizeofPtr:]))
		typ := int32(binary.NativeEndian.Uint32(oob[unix.SizeofPtr+4:]))
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && msgLen >= uint64(cmsgHdrLen+timespecLen) {
			return timespecNano(oob[cmsgHdrLen:]), true
		}
		next := (int(msgLen) + cmsgAlignTo - 1) &^ (cmsgAlignTo - 1)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, false
}

// timespecNano decodes a native struct timespec of timespecLen bytes:
// two longs, seconds then nanoseconds.
func timespecNano(b []byte) int64 {
	if timespecLen == 16 {
		sec := int64(binary.NativeEndian.Uint64(b))
		nsec := int64(binary.NativeEndian.Uint64(b[8:]))
		return sec*1e9 + nsec
	}
	sec := int64(int32(binary.NativeEndian.Uint32(b)))
	nsec := int64(int32(binary.NativeEndian.Uint32(b[4:])))
	return sec*1e9 + nsec
}
