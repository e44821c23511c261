package listencheck

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// heldHere reports whether this process has a socket bound to the unix
// socket path: its own listener, which a config reload binds again.
func heldHere(path string) bool {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if su, ok := sa.(*unix.SockaddrUnix); ok && su.Name == path {
			return true
		}
	}
	return false
}

// OwnSocketsKnown is whether Unix can tell this process's own sockets
// from another process's: on Linux it can.
const OwnSocketsKnown = true
