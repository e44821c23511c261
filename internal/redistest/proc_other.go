//go:build !unix

package redistest

import (
	"os"
	"syscall"
)

// Without SIGSTOP and SIGCONT, Start skips the test.
var (
	procAttr                  *syscall.SysProcAttr
	pauseSignal, resumeSignal os.Signal
)
