// Package tokensink keeps files that hold an identity's current access
// token, for tools that cannot send their requests through the proxy (the
// apic toolkit, SDKs with their own authentication), as Vault Agent's file
// sink does: each new token replaces the file atomically, mode 0600, and
// the file goes when its sink is closed.
//
// The file is the token in the clear, so its place is checked when the
// configuration loads (Resolve) and again before every write: no
// directory on the way may be writable by every user without the sticky
// bit, or belong to a user other than this process's or root, and the
// file itself may be neither a symbolic link nor another user's.
package tokensink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// Format is what a sink's file holds.
type Format int

// Formats of a sink's file.
const (
	// Plain is the access token and a newline.
	Plain Format = iota
	// Toolkit is the apic toolkit's token file (~/.apiconnect/token): the
	// token is the access_token of the server's entry, with an empty
	// refresh_token; other servers' entries are kept.
	Toolkit
)

// Resolve returns the absolute form of path in which to keep a token,
// after checking that it is a safe place: a leading ~/ is the home
// directory, the directories that exist are resolved (symbolic links
// followed, once, here) and checked as Check does, and so is the file when
// it exists. The directories that do not exist yet are made, mode 0700,
// at the first write.
func Resolve(path string) (string, error) {
	if path == "" {
		return "", errors.New("want the path of a file")
	}
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("%s: no home directory for ~/: %v", path, err)
		}
		path = filepath.Join(home, rest)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(path, string(filepath.Separator)) {
		return "", fmt.Errorf("%s: want the path of a file, not of a directory", path)
	}
	// The longest part of the directory that exists, resolved; the rest is
	// made at the first write.
	dir, missing := filepath.Dir(abs), ""
	for {
		real, err := filepath.EvalSymlinks(dir)
		if err == nil {
			dir = real
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", err
		}
		missing = filepath.Join(filepath.Base(dir), missing)
		dir = parent
	}
	if err := checkDirs(dir); err != nil {
		return "", err
	}
	file := filepath.Join(dir, missing, filepath.Base(abs))
	if err := checkFile(file); err != nil {
		return "", err
	}
	return file, nil
}

// Check reports why path, as Resolve returned it, is no safe place for a
// token now: a directory on the way is a symbolic link, is writable by
// every user without the sticky bit (anyone could replace the file), or
// belongs to a user other than this process's and root (who could make it
// so); or the file is a symbolic link, not a regular file, or another
// user's. A file or directory that does not exist passes.
func Check(path string) error {
	dir := filepath.Dir(path)
	for {
		if _, err := os.Lstat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if err := checkDirs(dir); err != nil {
		return err
	}
	return checkFile(path)
}

// checkDirs checks dir and every directory above it.
func checkDirs(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link (it was not when the configuration loaded)", d)
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", d)
		case fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("directory %s is writable by every user (mode %04o, no sticky bit): anyone could replace the token file; use a directory only you can write", d, fi.Mode().Perm())
		}
		if uid, ok := owner(fi); ok && uid != os.Geteuid() && uid != 0 {
			return fmt.Errorf("directory %s belongs to another user (uid %d), who can change who may write in it; use a directory of your own", d, uid)
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// checkFile checks the file at path, when there is one.
func checkFile(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link: name the file it points to (a link could be turned to another file)", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	if uid, ok := owner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s belongs to another user (uid %d): remove it or name another file", path, uid)
	}
	return nil
}

// Sink keeps one file with a token. Its methods are safe for concurrent
// use.
type Sink struct {
	format Format
	path   string
	server string

	mu        sync.Mutex
	written   string // the token the file holds, "" before the first write
	writtenAt time.Time
	err       error
	closed    bool
}

// New returns a sink of the file at path (as Resolve returned it); server
// is the entry's server for the Toolkit format. It writes nothing yet.
func New(format Format, path, server string) *Sink {
	return &Sink{format: format, path: path, server: server}
}

// Path is the file's path.
func (s *Sink) Path() string { return s.path }

// Format is what the file holds.
func (s *Sink) Format() Format { return s.format }

// Write puts token in the file, replacing it atomically (a reader sees the
// old file or the new, never part of one) by a new file of mode 0600,
// after checking the file's place as Check does. After Close, Write does
// nothing. Errors name the file and
// never hold the token; the last one is kept for Status.
func (s *Sink) Write(token string) error {
	if token == "" {
		return errors.New("no token to write")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	err := s.write(token)
	s.err = err
	if err == nil {
		s.written, s.writtenAt = token, time.Now()
	}
	return err
}

func (s *Sink) write(token string) error {
	// Directories missing at load are made here, then checked with the
	// rest: one somebody else made in the meantime is refused.
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("making the directory of %s: %v", s.path, err)
	}
	if err := Check(s.path); err != nil {
		return err
	}
	if s.format == Plain {
		return apic.WriteFileAtomic(s.path, []byte(token+"\n"))
	}
	tt, err := s.readToolkit()
	if err != nil {
		return err
	}
	if err := tt.Set(s.server, token, ""); err != nil {
		return err
	}
	data, err := tt.Bytes()
	if err != nil {
		return err
	}
	return apic.WriteFileAtomic(s.path, data)
}

// read returns the file's content, "" when it does not exist, without
// following a symbolic link.
func (s *Sink) read() ([]byte, error) {
	f, err := openNoFollow(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", s.path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v", s.path, err)
	}
	return data, nil
}

func (s *Sink) readToolkit() (*apic.ToolkitTokens, error) {
	data, err := s.read()
	if err != nil {
		return nil, err
	}
	return apic.ParseToolkitTokens(s.path, data)
}

// Close stops the sink and takes the token out of the file: the file is
// removed (with the Toolkit format, the server's entry, the others kept,
// and the file once no entry is left), but only while it still holds the
// token the sink wrote, so that a newer token another program put there
// stays. Close is idempotent.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.written == "" {
		return nil
	}
	if err := Check(s.path); err != nil {
		return err
	}
	if s.format == Plain {
		data, err := s.read()
		if err != nil || string(data) != s.written+"\n" {
			return err
		}
		return os.Remove(s.path)
	}
	tt, err := s.readToolkit()
	if err != nil || tt.AccessToken(s.server) != s.written {
		return err
	}
	tt.Remove(s.server)
	if tt.Len() == 0 {
		return os.Remove(s.path)
	}
	data, err := tt.Bytes()
	if err != nil {
		return err
	}
	return apic.WriteFileAtomic(s.path, data)
}

// Status is what a sink reports.
type Status struct {
	// WrittenAt is when the file last got a token.
	WrittenAt time.Time
	// Err is the last write's failure, nil after a success.
	Err error
}

// Status returns the sink's status.
func (s *Sink) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{WrittenAt: s.writtenAt, Err: s.err}
}
