// Command udpecho is the physical floor of the bench: a UDP echo server that
// moves datagrams with recvmmsg/sendmmsg batches and does nothing else.
//
// Each of -readers goroutines reads a batch from one shared socket and sends
// the same datagrams back to their sources in one call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
)

const batchSize = 64

func main() {
	addr := flag.String("addr", "127.0.0.1:9999", "UDP listen address (host:port)")
	readers := flag.Int("readers", 2, "goroutines reading the socket")
	flag.Parse()
	if err := run(*addr, *readers); err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
}

func run(addr string, readers int) error {
	if readers < 1 || readers > 64 {
		return fmt.Errorf("invalid -readers %d: want 1 to 64", readers)
	}
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(8 << 20)
		_ = uc.SetWriteBuffer(8 << 20)
	}
	fmt.Printf("udpecho listening on %s\n", c.LocalAddr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	pc := ipv4.NewPacketConn(c)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() { errs <- echo(pc) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// echo returns every datagram it reads to its source until the socket closes.
func echo(pc *ipv4.PacketConn) error {
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	out := make([]ipv4.Message, batchSize)
	for i := range out {
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read batch: %w", err)
		}
		for i, m := range msgs[:n] {
			out[i].Buffers[0] = m.Buffers[0][:m.N]
			out[i].Addr = m.Addr
		}
		for off := 0; off < n; {
			k, err := pc.WriteBatch(out[off:n], 0)
			if err != nil {
				// A client that went away makes sendmmsg fail for its
				// datagram; skip it rather than stop echoing for others.
				k = 1
			}
			off += k
		}
	}
}
