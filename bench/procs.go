package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the benchmark started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string        // file of its standard output and error
	done chan struct{} // closed once it has exited
	err  error         // its exit, once done is closed
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the process's log, on one line.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	return tail(b, 8)
}

// procs is the set of live child processes, stopped in reverse order of
// start (proxies, which sign out, before what they talk to).
type procs struct {
	mu   sync.Mutex
	live []*proc
}

// start starts cmd as name, its output to <logdir>/<name>.log. The child
// gets its own process group, so that a Ctrl-C reaches the benchmark
// alone and the benchmark stops its children in order; it is sent
// SIGTERM if the benchmark dies first.
func (ps *procs) start(logdir, name string, cmd *exec.Cmd) (*proc, error) {
	logPath := filepath.Join(logdir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.live = append(ps.live, p)
	ps.mu.Unlock()
	return p, nil
}

// stop sends p SIGTERM, waits up to 10 s, then kills it. It returns once
// p has exited.
func (ps *procs) stop(p *proc) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(10 * time.Second)
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Stop()
	}
	ps.mu.Lock()
	ps.live = slices.DeleteFunc(ps.live, func(q *proc) bool { return q == p })
	ps.mu.Unlock()
}

// stopAll stops every live process, the latest started first.
func (ps *procs) stopAll() {
	for {
		ps.mu.Lock()
		n := len(ps.live)
		var p *proc
		if n > 0 {
			p = ps.live[n-1]
		}
		ps.mu.Unlock()
		if p == nil {
			return
		}
		ps.stop(p)
	}
}

// pids returns the pids of the live processes.
func (ps *procs) pids() map[int]string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	m := make(map[int]string, len(ps.live))
	for _, p := range ps.live {
		m[p.pid()] = p.name
	}
	return m
}

// listenTCP opens a listener on a loopback port the kernel picks. The
// listener stays open for as long as the benchmark needs the address, so
// no other process can take the port.
func listenTCP() (*net.TCPListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// inheritable returns a copy of ln's socket for a child process, in
// non-blocking mode. (*net.TCPListener).File's copy reaches a child in
// blocking mode (os/exec takes its Fd); Go servers set the mode again
// themselves, but nginx expects an inherited listener to be non-blocking
// already, as its own master leaves it, and a worker would otherwise
// block in accept.
func inheritable(ln *net.TCPListener) (*os.File, error) {
	f, err := ln.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("dup: %v", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %v", err)
	}
	// A descriptor that is already non-blocking stays so: os.File only
	// sets back the mode that it changed itself.
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// caddy is a running apic-auth-proxy with a Caddyfile.
type caddy struct {
	*proc
	addr  string // host:port of its site listener
	admin string // path of its admin API's unix socket
	url   string // http://addr
}

// caddyKind is the configuration of a Caddy under test.
type caddyKind int

const (
	staticHeader caddyKind = iota // reverse_proxy with a fixed header_up Authorization
	apicAuth                      // apic_auth, then reverse_proxy
)

// caddyfile returns the Caddyfile of a Caddy of kind k that serves
// http://addr on the listener it inherits as fd 3, its admin API on the
// unix socket admin.
func (b *bench) caddyfile(k caddyKind, addr, admin, simURL string) string {
	var s strings.Builder
	// The apic_auth configurations log in at the first request, as they
	// were measured before the login at start: the storm (B) meets a cold
	// proxy, and a start (E) is timed to its first proxied 200 with the
	// login on the way.
	lazy := ""
	if k == apicAuth {
		lazy = "\tapic_auth {\n\t\tlazy_login\n\t}\n"
	}
	fmt.Fprintf(&s, `{
	admin unix/%s
	persist_config off
	auto_https off
	log {
		level WARN
	}
%s}

http://%s {
	bind fd/3
`, admin, lazy, addr)
	if k == apicAuth {
		fmt.Fprintf(&s, `	apic_auth {
		name bench
		server %s
		realm {env.APIC_REALM}
		username {env.APIC_USERNAME}
		password {env.APIC_PASSWORD}
		client_id {env.APIC_CLIENT_ID}
		client_secret {env.APIC_CLIENT_SECRET}
	}
	reverse_proxy %s
}
`, simURL, b.upAddr)
		return s.String()
	}
	fmt.Fprintf(&s, `	reverse_proxy %s {
		header_up Authorization "Bearer %s"
	}
}
`, b.upAddr, b.token)
	return s.String()
}

// startCaddy starts apic-auth-proxy run with a Caddyfile of kind k on the
// listener ln (handed over as fd 3). With wait, it returns once Caddy
// reports, on its --pingback connection, that its configuration is
// running; without, as soon as the process has started.
func (b *bench) startCaddy(ctx context.Context, name string, k caddyKind, ln *net.TCPListener, simURL string, wait bool) (*caddy, error) {
	if !wait {
		return b.startCaddyText(name, ln, func(addr, admin string) string { return b.caddyfile(k, addr, admin, simURL) })
	}
	addr := ln.Addr().String()
	admin, conf, err := b.writeCaddyfile(name, func(admin string) string { return b.caddyfile(k, addr, admin, simURL) })
	if err != nil {
		return nil, err
	}
	f, err := inheritable(ln)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	p, err := b.startReported(ctx, name, f, b.proxyBin, "run", "--config", conf, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	return &caddy{proc: p, addr: addr, admin: admin, url: "http://" + addr}, nil
}

// startCaddyText starts apic-auth-proxy run with the Caddyfile that text
// returns for the site address and admin socket, on the listener ln
// (handed over as fd 3), and returns as soon as the process has started.
func (b *bench) startCaddyText(name string, ln *net.TCPListener, text func(addr, admin string) string) (*caddy, error) {
	addr := ln.Addr().String()
	admin, conf, err := b.writeCaddyfile(name, func(admin string) string { return text(addr, admin) })
	if err != nil {
		return nil, err
	}
	f, err := inheritable(ln)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(b.proxyBin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = b.childEnv()
	cmd.ExtraFiles = []*os.File{f}
	p, err := b.procs.start(b.logDir(), name, cmd)
	if err != nil {
		return nil, err
	}
	return &caddy{proc: p, addr: addr, admin: admin, url: "http://" + addr}, nil
}

// writeCaddyfile writes the Caddyfile that text returns for the admin
// socket of a Caddy called name, and returns the socket's and the file's
// paths.
func (b *bench) writeCaddyfile(name string, text func(admin string) string) (admin, conf string, err error) {
	admin = filepath.Join(b.work, name+".admin.sock")
	_ = os.Remove(admin) // from an earlier start of the same name
	conf = filepath.Join(b.work, name+".Caddyfile")
	return admin, conf, os.WriteFile(conf, []byte(text(admin)), 0o600)
}

// startReported starts a Caddy command with --pingback and waits for the
// child to echo the random bytes it was given on standard input to the
// pingback listener: Caddy does so once its configuration runs. extra,
// when not nil, becomes the child's fd 3.
func (b *bench) startReported(ctx context.Context, name string, extra *os.File, bin string, args ...string) (*proc, error) {
	pb, err := listenTCP()
	if err != nil {
		return nil, err
	}
	defer pb.Close()
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	want := hex.EncodeToString(nonce)

	cmd := exec.Command(bin, append(args, "--pingback", pb.Addr().String())...)
	cmd.Env = b.childEnv()
	cmd.Stdin = strings.NewReader(want)
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	p, err := b.procs.start(b.logDir(), name, cmd)
	if err != nil {
		return nil, err
	}

	got := make(chan string, 1)
	go func() {
		for {
			c, err := pb.Accept()
			if err != nil {
				return // closed on return from startReported
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			bs, _ := io.ReadAll(io.LimitReader(c, 64))
			c.Close()
			if string(bs) == want {
				got <- string(bs)
				return
			}
		}
	}()
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case <-got:
		return p, nil
	case <-p.done:
		b.procs.stop(p)
		return nil, fmt.Errorf("%s exited before it was ready (%v): %s", name, p.err, p.logTail())
	case <-t.C:
		b.procs.stop(p)
		return nil, fmt.Errorf("%s was not ready within 60 s: %s", name, p.logTail())
	case <-ctx.Done():
		b.procs.stop(p)
		return nil, ctx.Err()
	}
}

// adminClient returns an HTTP client for an admin API on a unix socket.
func adminClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

// identityStatus is the part of GET /apic_auth/status the benchmark reads.
type identityStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Waits int    `json:"waits"`
}

// status returns the state and waits of the Caddy's apic_auth identity.
func (c *caddy) status(ctx context.Context) (identityStatus, error) {
	var ids []identityStatus
	if err := c.adminJSON(ctx, "/apic_auth/status", &ids); err != nil {
		return identityStatus{}, err
	}
	if len(ids) != 1 {
		return identityStatus{}, fmt.Errorf("admin status: %d identities, want 1", len(ids))
	}
	return ids[0], nil
}

// adminJSON decodes the answer to GET path on the Caddy's admin API into
// v.
func (c *caddy) adminJSON(ctx context.Context, path string, v any) error {
	client := adminClient(c.admin)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin %s: %d", path, resp.StatusCode)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("admin %s: %v", path, err)
	}
	return nil
}

// get sends one GET and returns the status; the body is read and dropped.
func get(ctx context.Context, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// expect200 sends one GET and fails unless it is answered 200. A request
// to a listener the benchmark holds waits in its backlog until the
// server accepts: no retry is needed while the server starts.
func expect200(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	code, err := get(ctx, client, url)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, code)
	}
	return nil
}

// waitFor polls cond every 10 ms until it is true, p exits, ctx ends or
// limit passes.
func waitFor(ctx context.Context, p *proc, limit time.Duration, what string, cond func() bool) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("%s: not within %s", what, limit)
		case <-p.done:
			return fmt.Errorf("%s: %s exited (%v): %s", what, p.name, p.err, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// ---------------------------------------------------------------- /proc

// cpuTicks returns the user and system CPU time of the processes, in
// clock ticks, from /proc/<pid>/stat.
func cpuTicks(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, err
		}
		t, err := statTicks(b)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		total += t
	}
	return total, nil
}

// statTicks returns utime + stime of a /proc/<pid>/stat line.
func statTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After the command: state (3), ..., utime (14), stime (15).
	if len(f) < 13 {
		return 0, errors.New("too few fields")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// statusKB returns a field of /proc/<pid>/status, in kB (VmRSS, VmHWM).
func statusKB(pid int, field string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			break
		}
		return strconv.ParseInt(fs[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// resetPeakRSS resets VmHWM to the current RSS (Linux 4.0+).
func resetPeakRSS(pid int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// children returns the pids of the children of pid.
func children(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// nonLoopbackListeners returns the TCP addresses beyond 127.0.0.0/8 and
// ::1 that one of pids listens on, from /proc/net/tcp{,6} and the
// processes' socket inodes.
func nonLoopbackListeners(pids []int) ([]string, error) {
	inodes := map[string]int{}
	for _, pid := range pids {
		fds, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/fd/*")
		for _, fd := range fds {
			l, err := os.Readlink(fd)
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = pid
			}
		}
	}
	var bad []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			pid, ours := inodes[f[9]]
			if !ours {
				continue
			}
			ip, port, err := procNetAddr(f[1])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", file, err)
			}
			if !ip.IsLoopback() {
				bad = append(bad, fmt.Sprintf("pid %d: %s", pid, net.JoinHostPort(ip.String(), strconv.Itoa(port))))
			}
		}
	}
	return bad, nil
}

// procNetAddr decodes an address of /proc/net/tcp{,6}: the IP as 32-bit
// words in host (little-endian) order, in hex, then ':' and the port.
func procNetAddr(s string) (net.IP, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("address %q", s)
	}
	return net.IP(raw), int(port), nil
}
