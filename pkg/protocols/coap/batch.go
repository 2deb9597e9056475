package coap

import (
	"net/netip"
)

// Batched socket I/O: a reader takes up to batchSize datagrams per system
// call (recvmmsg on Linux) and the replies produced while handling them, and
// the worker responses delivered in one link read, go out in one sendmmsg.
// Other systems fall back to one datagram per call.

const (
	// batchSize is the datagrams moved per system call.
	batchSize = 32
	// slotSize is the largest datagram a reader accepts. RFC 7252 §4.6
	// advises messages that fit 1152 bytes; block-wise transfer covers
	// larger bodies, so longer datagrams are dropped as malformed.
	slotSize = 4096
)

// outBatch collects datagrams to send together. It is not safe for
// concurrent use; callers guard it.
type outBatch struct {
	sock  *batchSocket
	state sendState
	n     int
	bufs  [batchSize][]byte
	to    [batchSize]netip.AddrPort
	// errs counts datagrams the kernel refused.
	errs func(n int)
}

func newOutBatch(sock *batchSocket, errs func(int)) *outBatch {
	b := &outBatch{sock: sock, errs: errs}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, 0, slotSize)
	}
	return b
}

// add queues a copy of p for to, flushing first when the batch is full.
func (b *outBatch) add(p []byte, to netip.AddrPort) {
	if b.n == batchSize {
		b.flush()
	}
	b.bufs[b.n] = append(b.bufs[b.n][:0], p...)
	b.to[b.n] = to
	b.n++
}

// flush sends the queued datagrams.
func (b *outBatch) flush() {
	if b.n == 0 {
		return
	}
	if failed := b.sock.writeBatch(&b.state, b.bufs[:b.n], b.to[:b.n]); failed > 0 && b.errs != nil {
		b.errs(failed)
	}
	b.n = 0
}
