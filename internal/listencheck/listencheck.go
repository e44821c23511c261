// Package listencheck tells whether another process already listens on an
// address, before a server binds it. Caddy binds TCP with SO_REUSEPORT on
// Linux, and unlinks a unix socket's path before it binds it: either way a
// second server on the same address starts without a word, and the two
// share (or steal) the first one's clients.
package listencheck

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// InUseError says that an address is held by another process.
type InUseError struct {
	// Addr is the address as the configuration names it: host:port, or
	// the unix socket's path.
	Addr string
	// Err is what the probe saw.
	Err error
}

func (e *InUseError) Error() string { return e.Addr + " is already in use" }
func (e *InUseError) Unwrap() error { return e.Err }

// dialTimeout bounds the connection attempt to a unix socket. A live
// socket answers at once (the kernel accepts into its backlog); a stale
// one is refused at once.
const dialTimeout = time.Second

// TCP reports an *InUseError when another socket listens on addr
// (host:port; an empty host is every address). It binds addr without
// SO_REUSEPORT (as net.Listen does), which fails while any other socket
// listens there, and closes the probe at once. Port 0 is never in use.
// Other bind errors (no such address, permission) are returned as they
// are: the server's own bind would report them the same.
func TCP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln.Close()
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return &InUseError{Addr: addr, Err: err}
	}
	return err
}

// Unix reports an *InUseError when something accepts connections on the
// unix socket at path. A path that does not exist, or a socket file that
// nobody listens on any more (left behind by a process that died), is
// free: a server may unlink and bind it. A path that is not a socket is
// left for the server's bind to refuse.
func Unix(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil
	}
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return nil // refused: stale
	}
	_ = c.Close()
	return &InUseError{Addr: path, Err: errors.New("a process accepts connections on it")}
}
