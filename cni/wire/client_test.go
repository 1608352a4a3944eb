package wire

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A hung agent must not wedge the plugin: the call ends with the context.
func TestClientBoundedByContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held <- c // accept, never answer
		}
	}()
	c := &Client{Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Status(ctx)
	if !errors.Is(err, ErrAgentUnreachable) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("hung agent: got %v, want ErrAgentUnreachable naming the socket", err)
	}
	// Cancellation without a deadline also ends the call.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel2() }()
	if _, err := c.Add(ctx2, AddRequest{ContainerID: "a", IfName: "eth0"}); !errors.Is(err, ErrAgentUnreachable) {
		t.Fatalf("cancelled call: %v", err)
	}
	_ = l.Close()
	for {
		select {
		case c := <-held:
			_ = c.Close()
		default:
			return
		}
	}
}

func TestClientRedialsUntilAgentAppears(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "late.sock")
	go func() {
		time.Sleep(200 * time.Millisecond)
		l, err := net.Listen("unix", sock)
		if err != nil {
			return
		}
		defer func() { _ = l.Close() }()
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		buf := make([]byte, 4096)
		_, _ = conn.Read(buf)
		_, _ = conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{\"ready\":true,\"role\":\"test\"}"))
	}()
	c := &Client{Socket: sock, DialWait: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil || !st.Ready || st.Role != "test" {
		t.Fatalf("status after a late agent: %+v %v", st, err)
	}
}
