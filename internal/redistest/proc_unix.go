//go:build unix && !linux

package redistest

import (
	"os"
	"syscall"
)

var (
	procAttr                  *syscall.SysProcAttr
	pauseSignal, resumeSignal os.Signal = syscall.SIGSTOP, syscall.SIGCONT
)
