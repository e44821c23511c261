package e2e

import "syscall"

// On Linux a proxy gets SIGKILL when the test binary dies (a -timeout
// panic, an interrupt): no proxy outlives the tests, holding its sockets.
func init() { procAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
