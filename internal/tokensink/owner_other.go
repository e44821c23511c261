//go:build !unix

package tokensink

import (
	"io/fs"
	"os"
)

// owner reports no owner where files have no user id.
func owner(fs.FileInfo) (int, bool) { return 0, false }

// openNoFollow opens path for reading; Check has refused a symbolic link.
func openNoFollow(path string) (*os.File, error) { return os.Open(path) }
