package wire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// ErrAgentUnreachable means nothing answers on the socket.
var ErrAgentUnreachable = errors.New("strata agent unreachable")

// Error is an error answer from the server.
type Error struct {
	Code    uint
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("strata agent: %s (code %d)", e.Message, e.Code) }

// Client calls the agent. Each call is one HTTP request on a fresh
// connection, bounded by the context.
type Client struct {
	Socket string
	// DialWait is how long a call keeps redialling a socket that is missing
	// or refusing (an agent restarting). Zero: fail at once. A request that
	// reached the server is never resent.
	DialWait time.Duration
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	deadline := time.Now().Add(c.DialWait)
	pause := 20 * time.Millisecond
	for {
		conn, err := d.DialContext(ctx, "unix", c.Socket)
		if err == nil {
			return conn, nil
		}
		retryable := errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
		if !retryable || time.Now().Add(pause).After(deadline) {
			return nil, fmt.Errorf("%w: cannot connect to %s (is strata-agent running on this node?): %v", ErrAgentUnreachable, c.Socket, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: cannot connect to %s before the deadline (is strata-agent running on this node?): %v", ErrAgentUnreachable, c.Socket, err)
		case <-time.After(pause):
		}
		pause = min(pause*2, 200*time.Millisecond)
	}
}

// do sends one request. in may be nil (GET); out receives a 2xx body. The
// request is written and the answer read on the calling goroutine, with no
// http.Transport: the plugin is a short-lived process on every pod's
// critical path, and fewer goroutines mean fewer wake-ups on a busy node.
func (c *Client) do(ctx context.Context, path string, in, out any) error {
	method, body := http.MethodGet, io.Reader(nil)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request for %s: %w", path, err)
		}
		method, body = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://strata"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Cancellation without a deadline still unblocks the read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("%w: send %s to %s: %v", ErrAgentUnreachable, path, c.Socket, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		// The request was sent, so the agent may have acted: the caller
		// decides how to recover (ADD undoes via DEL; DEL is retried).
		return fmt.Errorf("%w: no answer to %s from %s: %v", ErrAgentUnreachable, path, c.Socket, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer to %s on %s: %v", ErrAgentUnreachable, path, c.Socket, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Code == 0 {
			return &Error{Code: CodeInternal, Message: fmt.Sprintf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(data))}
		}
		return &Error{Code: e.Code, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer to %s from %s: %w", path, c.Socket, err)
	}
	return nil
}

// Add allocates (or returns the existing) address for the attachment.
func (c *Client) Add(ctx context.Context, r AddRequest) (Allocation, error) {
	var a Allocation
	err := c.do(ctx, PathAdd, r, &a)
	return a, err
}

// Del releases the attachment's address; releasing nothing is not an error.
func (c *Client) Del(ctx context.Context, a Attachment) (DelResponse, error) {
	var r DelResponse
	err := c.do(ctx, PathDel, a, &r)
	return r, err
}

// Check returns the attachment's allocation, or an *Error with
// CodeUnknownAttachment.
func (c *Client) Check(ctx context.Context, a Attachment) (Allocation, error) {
	var r Allocation
	err := c.do(ctx, PathCheck, a, &r)
	return r, err
}

// GC releases every allocation not in valid.
func (c *Client) GC(ctx context.Context, valid []Attachment) (GCResponse, error) {
	var r GCResponse
	err := c.do(ctx, PathGC, GCRequest{Valid: valid}, &r)
	return r, err
}

// Stale lists the allocations not in valid without releasing any (GC's
// dry run).
func (c *Client) Stale(ctx context.Context, valid []Attachment) ([]Allocation, error) {
	var r GCResponse
	err := c.do(ctx, PathGC, GCRequest{Valid: valid, DryRun: true}, &r)
	return r.Released, err
}

// Status asks whether the role can allocate.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var r StatusResponse
	err := c.do(ctx, PathStatus, nil, &r)
	return r, err
}
