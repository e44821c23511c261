//go:build !linux

package listencheck

// heldHere reports whether this process holds the unix socket path; only
// Linux tells, elsewhere it reports false.
func heldHere(string) bool { return false }

// OwnSocketsKnown is whether Unix can tell this process's own sockets
// from another process's: not here.
const OwnSocketsKnown = false
