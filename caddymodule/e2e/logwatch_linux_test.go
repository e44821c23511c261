package e2e

import (
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// awaitLog waits until the proxy's log holds s. Unlike await, which looks
// again at each answer of the simulator, it looks again at each write to
// the log (inotify): for lines the proxy writes after the last answer.
func (e *env) awaitLog(what, s string) {
	e.t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		e.t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, e.logFile, unix.IN_MODIFY); err != nil {
		e.t.Fatal(err)
	}
	written := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return // closed
			}
			select {
			case written <- struct{}{}:
			default:
			}
		}
	}()
	timer := time.NewTimer(awaitBound)
	defer timer.Stop()
	for !strings.Contains(e.logText(), s) {
		select {
		case <-written:
		case <-e.exited:
			e.t.Fatalf("waiting for %s: the proxy exited: %v\n%s", what, e.waitErr, e.stderr())
		case <-timer.C:
			e.t.Fatalf("no %s within %s", what, awaitBound)
		}
	}
}
