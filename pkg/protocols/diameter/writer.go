package diameter

import (
	"net"
	"sync"
	"time"
)

// writer serialises the messages sent on one peer connection. Answers arrive
// from forwarder callbacks in any order; send only queues, and one goroutine
// writes each batch with a single writev. It is safe for concurrent use.
type writer struct {
	conn     net.Conn
	timeout  time.Duration // per batch; a peer that does not read is closed
	maxQueue int
	wake     chan struct{} // capacity 1: a pending signal that the queue changed
	done     chan struct{} // closed when run returns

	mu         sync.Mutex
	queue      [][]byte
	closeAfter bool // close the connection once the queue is written
	stopped    bool // no more messages are accepted
}

func newWriter(conn net.Conn, timeout time.Duration, maxQueue int) *writer {
	return &writer{
		conn:     conn,
		timeout:  timeout,
		maxQueue: maxQueue,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// send queues msg and reports whether it was accepted. It never blocks. A
// full queue means the peer is not reading; the connection is then closed.
func (w *writer) send(msg []byte) bool {
	return w.enqueue(msg, false)
}

// sendAndClose queues msg as the last message and closes the connection
// after writing it.
func (w *writer) sendAndClose(msg []byte) bool {
	return w.enqueue(msg, true)
}

func (w *writer) enqueue(msg []byte, last bool) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	if len(w.queue) >= w.maxQueue {
		w.stopped = true
		w.mu.Unlock()
		w.conn.Close()
		return false
	}
	w.queue = append(w.queue, msg)
	if last {
		w.closeAfter, w.stopped = true, true
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// stop drops queued messages and makes run return.
func (w *writer) stop() {
	w.mu.Lock()
	w.stopped = true
	w.queue = nil
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes batches until stop, a write error or a sendAndClose message.
// It closes the connection when it returns.
func (w *writer) run() {
	defer close(w.done)
	defer w.conn.Close()
	var batch net.Buffers
	for range w.wake {
		w.mu.Lock()
		batch = append(batch[:0], w.queue...)
		clear(w.queue)
		w.queue = w.queue[:0]
		stopped, closeAfter := w.stopped, w.closeAfter
		w.mu.Unlock()

		if len(batch) > 0 {
			_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
			// WriteTo consumes its receiver, so give it a copy and keep batch's capacity.
			bufs := batch
			if _, err := bufs.WriteTo(w.conn); err != nil {
				w.stop()
				return
			}
		}
		if stopped {
			if closeAfter {
				// Let the peer read the last message before the close.
				if tc, ok := w.conn.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}
