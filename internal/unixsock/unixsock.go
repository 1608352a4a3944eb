// Package unixsock makes the agent's root-only unix sockets: the CNI socket
// and the control socket. Both are created 0600 in a 0700 directory, and
// every accepted connection's peer credentials are checked again, so a
// socket whose mode is loosened by hand still answers only root.
package unixsock

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Listen creates the socket at path with mode 0600 (its directory 0700 if
// it has to be made), replacing a stale socket left by a dead agent. what
// names the socket in errors ("CNI socket", "control socket").
func Listen(path, what string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s path %q is not absolute: give a path such as /run/strata/%s", what, path, filepath.Base(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory for %s %s: %w", what, path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s path %s exists and is not a socket: remove it or choose another path", what, path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s %s is in use by another agent: stop it first", what, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale %s %s: %w", what, path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w", what, path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("restrict %s %s to root: %w", what, path, err)
	}
	return l, nil
}

// RootOnly drops connections from anyone but root, or allowUID when it is
// positive (tests running unprivileged).
func RootOnly(l net.Listener, allowUID int, log *slog.Logger) net.Listener {
	return &peerCheckListener{Listener: l, allow: allowUID, log: log}
}

type peerCheckListener struct {
	net.Listener
	allow int
	log   *slog.Logger
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil
		}
		uid, err := PeerUID(uc)
		if err == nil && (uid == 0 || (l.allow > 0 && uid == l.allow)) {
			return c, nil
		}
		if l.log != nil {
			l.log.Warn("refused a connection from a non-root peer", "socket", l.Addr().String(), "uid", uid, "err", err)
		}
		_ = c.Close()
	}
}

// PeerUID is the uid of the process at the other end of c.
func PeerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}
