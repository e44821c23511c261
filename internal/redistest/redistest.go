// Package redistest starts a real redis-server for a test: on a free
// loopback port, without persistence, in the test's own temporary
// directory, and stopped when the test ends. A test can pause it (SIGSTOP:
// it accepts connections but answers nothing, as a stalled server does),
// resume it, kill it, restart it on the same port, and read everything
// stored in it.
//
// Without redis-server on PATH, Start skips the test, except when the CI
// environment variable is set: CI must run these tests, and fails them.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startBound bounds how long a redis-server may take to say it is ready:
// a bound on a broken machine, not a wait.
const startBound = 30 * time.Second

// bindRetries is how many free ports Start tries when another process
// takes the port between picking and binding it.
const bindRetries = 10

// Server is a redis-server process of one test.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	proc   *process
	client *redis.Client
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	ready  chan struct{} // closed at the "Ready to accept connections" line
	exited chan struct{} // closed once the process has exited
	mu     sync.Mutex
	log    strings.Builder
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// errBind is a start that failed because the port was taken.
var errBind = errors.New("the port is taken")

// Start starts a redis-server on a free loopback port and stops it when
// the test ends. It returns once the server answers PING.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is not on PATH, and CI must run the tests that need it (.ci/run installs it with apt-get)")
		}
		t.Skipf("redis-server is not on PATH (Debian: apt-get install redis-server); skipping a test that needs a real Redis")
	}
	if pauseSignal == nil {
		t.Skipf("redistest needs SIGSTOP and SIGCONT, which this system lacks")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.cleanup)
	for range bindRetries {
		s.port = freePort(t)
		err = s.start()
		if !errors.Is(err, errBind) {
			break
		}
		t.Logf("redis-server: port %d was taken meanwhile; trying another", s.port)
	}
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.ping()
	return s
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("picking a port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs redis-server on s.port and returns once it is ready, with
// errBind when the port is taken.
func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--logfile", "", "--loglevel", "notice")
	cmd.SysProcAttr = procAttr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	p := &process{cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(out)
		ready := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if !ready && strings.Contains(line, "Ready to accept connections") {
				ready = true
				close(p.ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-p.ready:
	case <-p.exited:
		log := p.output()
		if strings.Contains(log, "Address already in use") {
			return errBind
		}
		return fmt.Errorf("redis-server exited (%v) before it was ready; its log:\n%s", cmd.ProcessState, log)
	case <-time.After(startBound):
		_ = cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("redis-server was not ready within %s; its log:\n%s", startBound, p.output())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// ping fails the test unless the server answers PING.
func (s *Server) ping() {
	s.t.Helper()
	if _, err := s.Do("PING"); err != nil {
		s.t.Fatalf("redis-server on %s is ready but does not answer PING: %v", s.Addr, err)
	}
}

func (s *Server) running() *process {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("redis-server on %s is not running", s.Addr)
	}
	return s.proc
}

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.running().cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redis-server: sending %v: %v", sig, err)
	}
}

// Pause stops the server with SIGSTOP: connections are accepted by the
// kernel and commands are sent, but nothing is answered until Resume.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(pauseSignal)
}

// Resume continues a paused server with SIGCONT; it then answers what it
// was sent meanwhile.
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(resumeSignal)
}

// Kill ends the server with SIGKILL and waits for it to exit. Its data is
// gone: it keeps none on disk.
func (s *Server) Kill() {
	s.t.Helper()
	p := s.running()
	_ = p.cmd.Process.Kill()
	<-p.exited
	s.mu.Lock()
	s.proc = nil
	s.mu.Unlock()
}

// Restart kills the server and starts a new, empty one on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("restarting redis-server on %s: %v", s.Addr, err)
	}
	s.ping()
}

// Log returns what the running server (or the last one) logged so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return s.proc.output()
}

// Client returns a client of the server, closed when the test ends. Its
// calls time out after 5 s, so that a paused server fails them rather
// than hang the test.
func (s *Server) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{
			Addr:         s.Addr,
			DialTimeout:  5 * time.Second,
			ReadTimeout:  5 * time.Second,
			WriteTimeout: 5 * time.Second,
			MaxRetries:   -1,
		})
	}
	return s.client
}

// Do runs one command, such as Do("GET", key), and returns its answer.
func (s *Server) Do(args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Client().Do(ctx, args...).Result()
}

// Keys returns the keys that match pattern (as KEYS does), sorted. It
// fails the test on an error.
func (s *Server) Keys(pattern string) []string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := s.Client().Keys(ctx, pattern).Result()
	if err != nil {
		s.t.Fatalf("redis KEYS %q: %v", pattern, err)
	}
	slices.Sort(keys)
	return keys
}

// Dump returns every key with its value: a string's bytes, a sorted set's
// or set's or list's members, a hash's fields and values (each followed
// by a newline), or for any other type its DUMP serialization. It fails
// the test on an error.
func (s *Server) Dump() map[string][]byte {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.Client()
	dump := map[string][]byte{}
	for _, key := range s.Keys("*") {
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			s.t.Fatalf("redis TYPE %q: %v", key, err)
		}
		var members []string
		switch typ {
		case "string":
			v, err := c.Get(ctx, key).Bytes()
			if err != nil {
				s.t.Fatalf("redis GET %q: %v", key, err)
			}
			dump[key] = v
			continue
		case "zset":
			members, err = c.ZRange(ctx, key, 0, -1).Result()
		case "set":
			members, err = c.SMembers(ctx, key).Result()
		case "list":
			members, err = c.LRange(ctx, key, 0, -1).Result()
		case "hash":
			var h map[string]string
			h, err = c.HGetAll(ctx, key).Result()
			for f, v := range h {
				members = append(members, f, v)
			}
		case "none":
			continue // gone since KEYS
		default:
			var v string
			v, err = c.Dump(ctx, key).Result()
			members = []string{v}
		}
		if err != nil {
			s.t.Fatalf("redis: reading %s %q: %v", typ, key, err)
		}
		var b []byte
		for _, m := range members {
			b = append(b, m...)
			b = append(b, '\n')
		}
		dump[key] = b
	}
	return dump
}

func (s *Server) cleanup() {
	s.mu.Lock()
	client, p := s.client, s.proc
	s.client, s.proc = nil, nil
	s.mu.Unlock()
	if client != nil {
		_ = client.Close()
	}
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	if s.t.Failed() {
		s.t.Logf("redis-server on %s logged:\n%s", s.Addr, p.output())
	}
}
