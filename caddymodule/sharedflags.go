package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// sharedFlags are the quick start's shared session flags.
type sharedFlags struct {
	// Redis is --shared-session: redis://[user:password@]host:port[/db],
	// or rediss:// for TLS.
	Redis string
	// Dir is --shared-session-dir: a file_system storage's root.
	Dir string
	// KeyFile is --shared-session-key-file: the key material's file.
	KeyFile string
}

// redisPasswordEnv is where a Redis password is read from when the URL
// has none.
const redisPasswordEnv = "REDIS_PASSWORD"

// config builds shared_session from the flags: nil when neither storage
// flag is given. A password in the URL is taken, with a warning on warn
// (it shows in ps), and kept out of the config as a placeholder.
func (f sharedFlags) config(warn io.Writer) (*SharedSession, error) {
	switch {
	case f.Redis != "" && f.Dir != "":
		return nil, errors.New("--shared-session and --shared-session-dir exclude each other: name Redis or a directory")
	case f.Redis == "" && f.Dir == "":
		if f.KeyFile != "" {
			return nil, errors.New("--shared-session-key-file: set with --shared-session or --shared-session-dir")
		}
		return nil, nil
	}
	s := new(SharedSession)
	if f.KeyFile != "" {
		abs, err := filepath.Abs(f.KeyFile)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("--shared-session-key-file: %v", err)
		}
		s.Key = "{file." + abs + "}"
	}
	var storage map[string]any
	if f.Dir != "" {
		abs, err := filepath.Abs(f.Dir)
		if err != nil {
			return nil, fmt.Errorf("--shared-session-dir: %v", err)
		}
		storage = map[string]any{"module": "file_system", "root": abs}
	} else {
		var err error
		if storage, err = redisStorage(f.Redis, warn); err != nil {
			return nil, err
		}
	}
	s.StorageRaw, _ = json.Marshal(storage)
	return s, nil
}

// redisStorage is the redis storage module's config for a
// redis://[user:password@]host:port[/db] URL (rediss:// for TLS). Its
// errors quote no password.
func redisStorage(raw string, warn io.Writer) (map[string]any, error) {
	const want = "want redis://[user:password@]host:port[/db] (rediss:// for TLS)"
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--shared-session: %s", want)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("--shared-session: %s, got the scheme %q", want, u.Scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("--shared-session: %s, got the host %q", want, u.Host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("--shared-session: %s, got the port %q", want, port)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--shared-session: %s: no query or fragment", want)
	}
	db := strings.Trim(u.Path, "/")
	if db == "" {
		db = "0"
	}
	if n, err := strconv.Atoi(db); err != nil || n < 0 {
		return nil, fmt.Errorf("--shared-session: %s, got the database %q (a number)", want, db)
	}
	storage := map[string]any{"module": "redis", "address": []string{net.JoinHostPort(host, port)}, "db": db}
	if u.Scheme == "rediss" {
		storage["tls_enabled"] = true
	}
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			storage["username"] = name
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			fmt.Fprintf(warn, "warning: --shared-session: a password in the URL shows in ps and the shell's history; set %s instead\n", redisPasswordEnv)
			storage["password"] = secretPlaceholder("APIC_AUTH_PROXY_REDIS_PASSWORD", pw)
			return storage, nil
		}
	}
	if os.Getenv(redisPasswordEnv) != "" {
		storage["password"] = "{env." + redisPasswordEnv + "}"
	}
	return storage, nil
}
