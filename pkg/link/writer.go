package link

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
)

const (
	// maxQueued bounds the bytes waiting to go out on one connection: the
	// frames queued since the last flush plus gnet's outbound buffer. It fits
	// 16 frames of the maximum size, and keeps a peer that stops reading from
	// growing our memory without bound.
	maxQueued = 16 << 20

	// maxKeptBuf is the largest write buffer kept for reuse after a flush, so
	// one burst of large frames does not pin its memory for the connection's
	// lifetime.
	maxKeptBuf = 256 << 10
)

// frameWriter queues encoded frames for one gnet connection and writes
// everything queued in one Conn.Write on the connection's event loop, so a
// burst of frames costs one task and usually one write syscall. It is safe for
// concurrent use.
type frameWriter struct {
	conn      gnet.Conn     // set before the first send, then read-only
	flushTask gnet.Runnable // w.flush, built once so scheduling does not allocate it

	// outbound is gnet's outbound buffer size after the last flush. Only the
	// event loop writes it.
	outbound atomic.Int64

	mu        sync.Mutex
	buf       []byte // frames queued since the last flush
	spare     []byte // the previous buffer, kept for reuse
	scheduled bool   // a flush task is queued on the event loop
	closed    bool
}

func (w *frameWriter) init(c gnet.Conn) {
	w.conn = c
	w.flushTask = gnet.RunnableFunc(w.flush)
}

// send encodes f into the queue and schedules a flush unless one is pending.
// The caller may reuse f's buffers once send returns.
func (w *frameWriter) send(f *Frame) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	queued := len(w.buf) + int(w.outbound.Load())
	if queued+f.Len() > maxQueued {
		// A flush refreshes the outbound figure once gnet has drained.
		schedule := w.markScheduled()
		w.mu.Unlock()
		if schedule {
			w.schedule()
		}
		return fmt.Errorf("%w: %d bytes queued on the connection to %s, max %d",
			ErrOverloaded, queued, w.conn.RemoteAddr(), maxQueued)
	}
	buf, err := AppendFrame(w.buf, f)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	w.buf = buf
	schedule := w.markScheduled()
	w.mu.Unlock()

	if schedule {
		return w.schedule()
	}
	return nil
}

// markScheduled reports whether the caller must queue a flush task.
// w.mu must be held.
func (w *frameWriter) markScheduled() bool {
	if w.scheduled {
		return false
	}
	w.scheduled = true
	return true
}

func (w *frameWriter) schedule() error {
	err := w.conn.EventLoop().Execute(context.Background(), w.flushTask)
	if err != nil {
		w.close()
		return fmt.Errorf("%w: queue write to %s: %v", ErrClosed, w.conn.RemoteAddr(), err)
	}
	return nil
}

// flush runs on the connection's event loop. A failed write makes gnet close
// the connection, and the OnClose handler then fails what was in flight.
func (w *frameWriter) flush(context.Context) error {
	w.mu.Lock()
	buf := w.buf
	w.buf, w.spare = w.spare[:0], nil
	w.scheduled = false
	closed := w.closed
	w.mu.Unlock()

	// The closed check keeps a flush queued before OnClose from writing to
	// a file descriptor that gnet may already have reused.
	if !closed && len(buf) > 0 {
		_, _ = w.conn.Write(buf)
	}
	if !closed {
		w.outbound.Store(int64(w.conn.OutboundBuffered()))
	}
	if cap(buf) > maxKeptBuf {
		return nil
	}
	w.mu.Lock()
	if w.spare == nil && !w.closed {
		w.spare = buf[:0]
	}
	w.mu.Unlock()
	return nil
}

// close drops the queue and makes later sends and flushes do nothing. OnClose
// calls it on the event loop, which orders it before any later flush.
func (w *frameWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.buf, w.spare = nil, nil
	w.mu.Unlock()
}
