package e2e

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// awaitLog waits until the proxy's log (or, for a Caddyfile that logs
// there, its standard error) holds s. Unlike await, which looks again at
// each answer of the simulator, it looks again at each write to either
// (inotify): for lines the proxy writes after the last answer.
func (e *env) awaitLog(what, s string) {
	e.t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		e.t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	var watched int
	for _, file := range []string{e.logFile, e.stderrFile()} {
		if _, err := unix.InotifyAddWatch(fd, file, unix.IN_MODIFY); err == nil {
			watched++
		}
	}
	if watched == 0 {
		e.t.Fatal("neither the log nor standard error can be watched")
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
	e.awaitWoken(what, func() <-chan struct{} { return written }, func() bool {
		logs, _ := os.ReadFile(e.logFile) // absent when the Caddyfile logs elsewhere
		return strings.Contains(string(logs), s) || strings.Contains(e.stderr(), s)
	})
}

// awaitFirstLogin waits for the log line of the first login at start and
// returns the token requests made so far.
func (e *env) awaitFirstLogin() int {
	e.t.Helper()
	e.awaitLog("the first login", `"msg":"apic_auth ready: `)
	return e.sim.TokenRequests("", "")
}
