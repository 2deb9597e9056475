package link

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
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

// frameWriter queues encoded frames for one gnet connection and writes them
// out. It is safe for concurrent use.
//
// Frames leave by one of three routes, chosen so that a request crosses as
// few threads as possible:
//
//   - direct: the sending goroutine writes the queue to the socket itself,
//     through a duplicate of the connection's descriptor, while gnet holds
//     no unsent bytes for the connection. A frame then costs no hand-off to
//     the event loop.
//   - loop: while gnet holds unsent bytes (the socket was full), frames go
//     through a flush task on the event loop, behind those bytes, so the
//     stream stays in order.
//   - in-loop: while the event loop itself is handling a read (beginLoop to
//     endLoop), frames are queued and endLoop writes them all at once.
//
// Direct writes happen with mu held. A loop write releases mu around gnet's
// Write, because a failed Write closes the connection and calls OnClose,
// which takes mu, but loopWriting keeps direct writes off the socket
// meanwhile. So writes from different routes never interleave on the
// stream.
type frameWriter struct {
	conn      gnet.Conn     // set before the first send, then read-only
	flushTask gnet.Runnable // w.flush, built once so scheduling does not allocate it

	// dirty is set while frames are queued and no flush is scheduled, so
	// that Client.Flush can skip idle connections without locking.
	dirty atomic.Bool

	mu  sync.Mutex
	fd  int    // duplicate of the connection's descriptor, -1 when none
	buf []byte // frames queued since the last write
	// outbound is gnet's outbound buffer size after the last loop write.
	outbound int
	// loopOwned is set while gnet may hold unsent bytes. Direct writes
	// wait until a loop flush finds gnet's buffer empty again.
	loopOwned bool
	scheduled bool // a flush task is queued on the event loop
	inLoop    bool // the event loop is between beginLoop and endLoop
	// loopWriting is set while the event loop writes without mu held.
	// Frames sent meanwhile stay queued, and the loop writes them next.
	loopWriting bool
	// spare is a written buffer kept for reuse by the next loop write.
	spare  []byte
	closed bool
}

// init runs on the event loop when the connection opens. Direct writes use
// a duplicate descriptor, so they cannot reach another socket that reuses
// the number after gnet closes the connection. The socket stays open until
// both descriptors are closed.
func (w *frameWriter) init(c gnet.Conn) {
	w.conn = c
	w.flushTask = gnet.RunnableFunc(w.flush)
	w.fd = -1
	if fd, err := unix.Dup(c.Fd()); err == nil {
		unix.CloseOnExec(fd)
		w.fd = fd
	}
}

// send queues f and writes it at once when it may go direct. The caller may
// reuse f's buffers once send returns.
func (w *frameWriter) send(f *Frame) error {
	w.mu.Lock()
	if err := w.queueLocked(f); err != nil {
		return w.rejectLocked(err)
	}
	return w.writeLocked()
}

// rejectLocked unlocks w.mu and returns err. When the queue is full, it
// also schedules a loop flush, which updates the outbound size after gnet
// drains its buffer.
func (w *frameWriter) rejectLocked(err error) error {
	kick := errors.Is(err, ErrOverloaded) && !w.scheduled && !w.inLoop && !w.closed
	if kick {
		w.scheduled = true
	}
	w.mu.Unlock()
	if kick {
		_ = w.schedule()
	}
	return err
}

// queue adds f to the queue without writing it. Client.Flush or a later
// send writes it.
func (w *frameWriter) queue(f *Frame) error {
	w.mu.Lock()
	if err := w.queueLocked(f); err != nil {
		return w.rejectLocked(err)
	}
	if !w.scheduled && !w.inLoop {
		w.dirty.Store(true)
	}
	w.mu.Unlock()
	return nil
}

func (w *frameWriter) queueLocked(f *Frame) error {
	if w.closed {
		return ErrClosed
	}
	queued := len(w.buf) + w.outbound
	if queued+f.Len() > maxQueued {
		return fmt.Errorf("%w: %d bytes queued on the connection to %s, max %d",
			ErrOverloaded, queued, w.conn.RemoteAddr(), maxQueued)
	}
	buf, err := AppendFrame(w.buf, f)
	if err != nil {
		return err
	}
	w.buf = buf
	return nil
}

// writeNow writes the queued frames by the fastest open route. Client.Flush
// calls it for the frames added by queue.
func (w *frameWriter) writeNow() error {
	if !w.dirty.Load() {
		return nil
	}
	w.mu.Lock()
	return w.writeLocked()
}

// writeLocked writes the queue directly, or leaves it to the event loop,
// then unlocks w.mu.
func (w *frameWriter) writeLocked() error {
	w.dirty.Store(false)
	if len(w.buf) == 0 || w.closed || w.inLoop || w.scheduled || w.loopWriting {
		// Empty, or already in the hands of the event loop.
		w.mu.Unlock()
		return nil
	}
	if !w.loopOwned && w.fd >= 0 {
		// EAGAIN and real errors both leave the rest to gnet below.
		n, _ := unix.Write(w.fd, w.buf)
		if n < 0 {
			n = 0
		}
		if n == len(w.buf) {
			// As in loopWriteLocked, a burst's large buffer is not kept.
			if cap(w.buf) > maxKeptBuf {
				w.buf = nil
			} else {
				w.buf = w.buf[:0]
			}
			w.mu.Unlock()
			return nil
		}
		// A full socket or an error: gnet writes the rest when the socket
		// drains, or meets the error and closes the connection.
		w.buf = w.buf[:copy(w.buf, w.buf[n:])]
		w.loopOwned = true
	}
	w.scheduled = true
	w.mu.Unlock()
	return w.schedule()
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
	w.scheduled = false
	w.loopWriteLocked()
	w.mu.Unlock()
	return nil
}

// loopWriteLocked writes the queue through gnet until it is empty. It runs
// on the event loop with w.mu held, and releases it around each Write: when
// a Write fails, gnet closes the connection and calls OnClose on this same
// goroutine, and OnClose takes w.mu. The closed check keeps a flush queued
// before OnClose from writing to a connection that gnet has closed.
func (w *frameWriter) loopWriteLocked() {
	for !w.closed {
		buf := w.buf
		if len(buf) > 0 {
			w.buf, w.spare = w.spare[:0], nil
			w.loopWriting = true
			w.mu.Unlock()
			_, _ = w.conn.Write(buf)
			w.mu.Lock()
			w.loopWriting = false
			// gnet copies what it cannot write at once, so buf is free.
			if cap(buf) <= maxKeptBuf && w.spare == nil {
				w.spare = buf[:0]
			}
			if w.closed {
				return
			}
		}
		w.outbound = w.conn.OutboundBuffered()
		w.loopOwned = w.outbound > 0
		if len(w.buf) == 0 {
			return
		}
	}
}

// beginLoop marks the start of a read on the event loop: frames sent until
// endLoop are queued and written together by endLoop.
func (w *frameWriter) beginLoop() {
	w.mu.Lock()
	w.inLoop = true
	w.mu.Unlock()
}

// endLoop writes the frames queued since beginLoop. It runs on the event
// loop, so it may use gnet's own write.
func (w *frameWriter) endLoop() {
	w.mu.Lock()
	w.inLoop = false
	w.dirty.Store(false)
	if len(w.buf) > 0 && !w.scheduled {
		w.loopWriteLocked()
	}
	w.mu.Unlock()
}

// close drops the queue and makes later sends and flushes do nothing. OnClose
// calls it on the event loop, which orders it before any later flush.
func (w *frameWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.buf, w.spare = nil, nil
	w.dirty.Store(false)
	if w.fd >= 0 {
		_ = unix.Close(w.fd)
		w.fd = -1
	}
}
