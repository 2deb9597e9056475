package main

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

func TestEchoReturnsEachDatagramToItsSource(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var echoErr error
	wg.Go(func() { echoErr = echo(ipv4.NewPacketConn(srv)) })

	for i := range 3 {
		c, err := net.Dial("udp4", srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := []byte(fmt.Sprintf("client %d", i))
		if _, err := c.Write(want); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 64)
		n, err := c.Read(got)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if !bytes.Equal(got[:n], want) {
			t.Errorf("client %d got %q, want %q", i, got[:n], want)
		}
	}
	srv.Close()
	wg.Wait()
	if echoErr != nil {
		t.Errorf("echo returned %v after close, want nil", echoErr)
	}
}

func TestRunRejectsReaders(t *testing.T) {
	if err := run("127.0.0.1:0", 0); err == nil {
		t.Error("run accepted -readers 0")
	}
}
