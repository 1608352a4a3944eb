package nsutil

import (
	"context"
	"net"
)

// DialContext opens a connection from inside the namespace. The socket is
// created on the locked thread inside Do, so it belongs to the namespace; the
// returned connection is then usable from any goroutine. Use it as an
// http.Transport or rest.Config dialer to talk to a server that only the
// namespace can reach.
func (n NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
