package listencheck

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// listenShared listens as Caddy does on Linux: with SO_REUSEPORT, so that
// a second server with the option could bind the same address.
func listenShared(t *testing.T, addr string) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestTCPInUse(t *testing.T) {
	ln := listenShared(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, probe := range []string{addr, ":" + port, "0.0.0.0:" + port} {
		err := TCP(probe)
		var inUse *InUseError
		if !errors.As(err, &inUse) {
			t.Fatalf("TCP(%q) with a shared listener there: got %v, want an InUseError", probe, err)
		}
		if want := probe + " is already in use"; err.Error() != want {
			t.Errorf("TCP(%q) = %q, want %q", probe, err, want)
		}
	}
}

func TestTCPFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := TCP(addr); err != nil {
		t.Fatalf("TCP(%q) after its listener closed: %v", addr, err)
	}
	// The probe is closed: the address can be bound again.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the probe kept %s: %v", addr, err)
	}
	ln.Close()
	if err := TCP("127.0.0.1:0"); err != nil {
		t.Fatalf("port 0: %v", err)
	}
}

func TestTCPOtherErrors(t *testing.T) {
	// An address this machine does not have is not "in use".
	err := TCP("192.0.2.1:1")
	var inUse *InUseError
	if err == nil || errors.As(err, &inUse) {
		t.Fatalf("TCP on an address not on this machine: got %v, want the bind's own error", err)
	}
}

func TestUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")

	if err := Unix(path); err != nil {
		t.Fatalf("no file: %v", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	err = Unix(path)
	var inUse *InUseError
	if !errors.As(err, &inUse) || err.Error() != path+" is already in use" {
		t.Fatalf("live socket: got %v, want %q", err, path+" is already in use")
	}
	// A socket file left behind by a listener that is gone is free.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the stale socket file should remain: %v", err)
	}
	if err := Unix(path); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	// A regular file is not a socket: the server's bind decides.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Unix(plain); err != nil {
		t.Fatalf("regular file: %v", err)
	}
}
