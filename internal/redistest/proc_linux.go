package redistest

import (
	"os"
	"syscall"
)

// On Linux redis-server gets SIGKILL when the test binary dies (a -timeout
// panic, an interrupt): no server outlives the tests, holding its port.
var (
	procAttr                            = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pauseSignal, resumeSignal os.Signal = syscall.SIGSTOP, syscall.SIGCONT
)
