// Command bench runs the benchmarks of apic-auth-proxy in one run, on
// loopback, and writes the report of BENCHMARKS.md:
//
//	go run ./bench                 # about 7 minutes on 2 cores
//	go run ./bench > result.md     # the report alone (progress goes to stderr)
//	go run ./bench -phases A -rounds 5 -json a.json
//
// It needs Go, wrk, nginx and redis-server; they are installed from
// Debian (apt-get install wrk nginx-light redis-server) when missing. It builds
// apic-auth-proxy into a temporary directory and runs, in this process,
// the upstream (a small HTTP server that counts requests without a bearer
// token) and the API Connect simulator (internal/apicsim); the storm and
// upload clients are subcommands of this program, run in processes of
// their own. Then it measures:
//
//   - A. req/s, p50/p99 latency (wrk --latency, 1 and 32 connections) and
//     CPU time per request of the upstream directly, nginx with a static
//     Authorization header, Caddy (the same binary) with a static
//     header_up Authorization, and Caddy with apic_auth logged in to the
//     simulator; the four interleaved, round after round, median of the
//     rounds with their minimum and maximum.
//   - B. token storm: 1,000 concurrent requests on a cold apic_auth proxy,
//     and on a fresh static Caddy for comparison.
//   - C. refresh under load: tokens of 2 s; 30 s of wrk at 32 connections
//     through apic_auth, then through static Caddy.
//   - D. a 1 GiB upload, with a Content-Length and chunked, through static
//     Caddy, apic_auth, and the apic-proxy quick start to the simulator's
//     publish endpoint (which checks the SHA-256): throughput and the
//     proxy's peak RSS (VmHWM).
//   - E. start-up: process start to the first proxied 200 (median of 5).
//   - F. a fleet: 20 apic_auth proxies sharing one session in a
//     redis-server of the run, started at once, cold and warm: token
//     requests, time to the slowest proxy's first proxied 200, and the
//     storage operations per 10,000 proxied requests.
//
// No port is picked in advance: every TCP listener is opened on
// 127.0.0.1:0 by this program and kept open; Caddy gets its site listener
// as fd 3 (bind fd/3) and reports that it is running on a --pingback
// connection, nginx gets its listener through the NGINX variable (as in
// its binary upgrade), and admin APIs listen on unix sockets in the
// temporary directory.
//
// The Markdown report goes to standard output (or -md), every figure as
// JSON to -json. The exit status is 1 when a measurement could not be
// taken (a missed goal is reported, not fatal), 2 for bad settings. Every
// process it starts is stopped on exit, on Ctrl-C too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// The simulator's developer user, in every apic_auth configuration.
const (
	benchRealm        = apicsim.DefaultProviderRealm
	benchUsername     = apicsim.DefaultProviderUsername
	benchPassword     = apicsim.DefaultProviderPassword
	benchClientID     = apicsim.DefaultClientID
	benchClientSecret = apicsim.DefaultClientSecret
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code, ok := subcommand(ctx, os.Args[1:])
	if !ok {
		code = run(ctx, os.Args[1:])
	}
	stop()
	os.Exit(code)
}

// bench is one run.
type bench struct {
	s     *settings
	work  string // the temporary directory
	procs procs
	start time.Time

	self                       string // this program, for its client subcommands
	proxyBin, wrkBin, nginxBin string
	clkTck                     int64

	up     *upstream
	upAddr string // host:port
	sim    *apicsim.Server
	simURL string
	token  string // a real simulator token, for the static configurations
	static *caddy // the static Caddy of A and C

	res     *results
	missing []string
}

func run(ctx context.Context, args []string) int {
	s, err := parseSettings(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	b := &bench{s: s, start: time.Now()}
	err = b.run(ctx)
	if ctx.Err() != nil {
		b.logf("interrupted")
		return 130
	}
	if err != nil {
		b.logf("FATAL: %v", err)
		return 1
	}
	if len(b.missing) > 0 {
		b.logf("%d measurement(s) not taken", len(b.missing))
		return 1
	}
	return 0
}

// logf prints progress on standard error.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// miss records a measurement that could not be taken.
func (b *bench) miss(format string, args ...any) {
	m := fmt.Sprintf(format, args...)
	b.missing = append(b.missing, m)
	b.logf("MEASUREMENT NOT TAKEN: %s", m)
}

func (b *bench) logDir() string { return filepath.Join(b.work, "log") }

// childEnv is the environment of the proxies: the secrets reach apic_auth
// through {env.*} placeholders, and Caddy writes nothing to the real
// home.
func (b *bench) childEnv() []string {
	home := filepath.Join(b.work, "home")
	return append(os.Environ(),
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, "config"), "XDG_DATA_HOME="+filepath.Join(home, "data"),
		"APIC_REALM="+benchRealm, "APIC_USERNAME="+benchUsername, "APIC_PASSWORD="+benchPassword,
		"APIC_CLIENT_ID="+benchClientID, "APIC_CLIENT_SECRET="+benchClientSecret,
	)
}

// run does the whole run: set-up, phases, report.
func (b *bench) run(ctx context.Context) error {
	b.res = &results{
		StartedAt: b.start.UTC().Format("2006-01-02 15:04:05 UTC"),
		Command:   b.s.commandLine(),
		Settings:  b.s,
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := b.installTools(ctx); err != nil {
		return err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return errors.New("go is needed to build apic-auth-proxy")
	}
	if b.work, err = os.MkdirTemp("", "apic-bench."); err != nil {
		return err
	}
	defer func() {
		b.procs.stopAll()
		if b.s.Keep {
			b.logf("kept %s", b.work)
			return
		}
		_ = os.RemoveAll(b.work)
	}()
	for _, d := range []string{"bin", "log", "wrk", "home"} {
		if err := os.MkdirAll(filepath.Join(b.work, d), 0o700); err != nil {
			return err
		}
	}
	if err := b.build(ctx); err != nil {
		return err
	}
	b.clkTck = clockTicks(ctx)
	b.res.Machine = b.describeMachine(ctx)
	if err := b.startBackends(ctx); err != nil {
		return err
	}

	phases := map[string]func(context.Context){"A": b.phaseA, "B": b.phaseB, "C": b.phaseC, "D": b.phaseD, "E": b.phaseE, "F": b.phaseF}
	for _, p := range b.s.Phases {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		phases[p](ctx)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.res.BadAuthTotal = b.up.counts().BadAuth
	b.res.Missing = b.missing
	b.res.ElapsedS = time.Since(b.start).Seconds()
	b.res.Machine.LoadAtEnd = loadAvg()
	b.logf("done in %.0f s", b.res.ElapsedS)
	return b.writeReports()
}

// build builds apic-auth-proxy from the module this program is in, and
// records the commit measured.
func (b *bench) build(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	b.res.Commit = "?"
	if out, err := gitOut(ctx, root, "rev-parse", "--short", "HEAD"); err == nil {
		b.res.Commit = out
		if st, err := gitOut(ctx, root, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
			b.res.Commit += " (with uncommitted changes)"
		}
	}
	b.proxyBin = filepath.Join(b.work, "bin", "apic-auth-proxy")
	b.logf("building %s into %s", b.res.Commit, b.proxyBin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.proxyBin, "./cmd/apic-auth-proxy")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/apic-auth-proxy: %v", err)
	}
	return nil
}

func gitOut(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// serve serves h on a new loopback listener until the run ends, and
// returns the listener's address.
func (b *bench) serve(h http.Handler) (string, error) {
	ln, err := listenTCP()
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// startBackends starts the upstream and the simulator in this process,
// and gets the static configurations' token from the simulator with
// apic-auth-proxy apic-token, as apic_auth would.
func (b *bench) startBackends(ctx context.Context) error {
	b.up = newUpstream()
	var err error
	if b.upAddr, err = b.serve(b.up); err != nil {
		return err
	}
	b.logf("upstream at %s", b.upAddr)
	if b.sim, b.simURL, err = b.startSim(apicsim.DefaultConfig()); err != nil {
		return err
	}
	b.logf("simulator at %s", b.simURL)

	cmd := exec.CommandContext(ctx, b.proxyBin, "apic-token")
	cmd.Env = append(b.childEnv(), "APIC_SERVER="+b.simURL)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("apic-token against the simulator: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	b.token = strings.TrimSpace(string(out))
	if b.token == "" || strings.ContainsAny(b.token, " \t\r\n\"\\") {
		return errors.New("apic-token printed no usable token")
	}
	b.res.TokenBytes = len(b.token)
	b.logf("static token: %d bytes", len(b.token))
	b.sim.ResetStats() // the simulator's counts start here
	return nil
}

// startSim starts a simulator of cfg (the -quiet simulator of
// cmd/apicsim: no request log) and returns it and its URL.
func (b *bench) startSim(cfg apicsim.Config) (*apicsim.Server, string, error) {
	sim, err := apicsim.New(cfg)
	if err != nil {
		return nil, "", err
	}
	addr, err := b.serve(sim)
	if err != nil {
		return nil, "", err
	}
	return sim, "http://" + addr, nil
}

// simTokens counts the simulator's token requests, of every grant and
// outcome.
func simTokens(sim *apicsim.Server) int { return sim.TokenRequests("", "") }

// checkLoopback fails when a process of the run listens beyond loopback.
func (b *bench) checkLoopback(extra ...int) error {
	var pids []int
	for pid := range b.procs.pids() {
		pids = append(pids, pid)
		pids = append(pids, children(pid)...)
	}
	pids = append(pids, extra...)
	pids = append(pids, os.Getpid())
	bad, err := nonLoopbackListeners(pids)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("listening beyond loopback: %s", strings.Join(bad, ", "))
	}
	return nil
}
