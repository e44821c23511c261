package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// configuration names one of the configurations of phase A.
type configuration struct {
	Key   string `json:"key"`
	Label string `json:"label"`
}

var (
	direct    = configuration{"direct", "upstream directly"}
	nginxConf = configuration{"nginx", "nginx, static header"}
	static    = configuration{"static", "Caddy, static header_up"}
	apic      = configuration{"apic", "Caddy + apic_auth"}
	quick     = configuration{"quick", "apic-proxy quick start → simulator publish"}

	aConfigs = []configuration{direct, nginxConf, static, apic}
)

// target is what wrk runs against in phase A.
type target struct {
	url    string
	script string       // wrk's Lua script
	pids   func() []int // the processes doing the work, for CPU time
}

// sharedStatic returns the static Caddy that A and C measure, starting it
// the first time.
func (b *bench) sharedStatic(ctx context.Context) (*caddy, error) {
	if b.static != nil {
		return b.static, nil
	}
	ln, err := listenTCP()
	if err != nil {
		return nil, err
	}
	c, err := b.startCaddy(ctx, "caddy-static", staticHeader, ln, "", true)
	ln.Close() // Caddy has it
	if err != nil {
		return nil, err
	}
	if err := expect200(ctx, c.url+"/api/orgs"); err != nil {
		return nil, fmt.Errorf("static Caddy: %v", err)
	}
	b.static = c
	return c, nil
}

// wrkScripts writes the two wrk scripts: the report alone, and the report
// with the bearer header that the proxies add (for the upstream directly).
func (b *bench) wrkScripts() (plain, bearer string, err error) {
	plain = filepath.Join(b.work, "report.lua")
	bearer = filepath.Join(b.work, "report-bearer.lua")
	if err := writeWrkScript(plain, "", ""); err != nil {
		return "", "", err
	}
	if err := writeWrkScript(bearer, "Authorization", "Bearer "+b.token); err != nil {
		return "", "", err
	}
	return plain, bearer, nil
}

// ---------------------------------------------------------------- A

// aRun is one measured wrk run of phase A.
type aRun struct {
	Conns     int       `json:"conns"`
	Config    string    `json:"config"`
	Round     int       `json:"round"`
	RPS       float64   `json:"rps"`
	P50MS     float64   `json:"p50_ms"`
	P99MS     float64   `json:"p99_ms"`
	MaxMS     float64   `json:"max_ms"`
	Errors    int64     `json:"errors"`
	CPUUSReq  float64   `json:"cpu_us_per_request"`
	BadAuth   int64     `json:"bad_auth"`
	WrkResult wrkResult `json:"wrk"`
}

// aSummary is the summary of the rounds of one configuration and
// connection count.
type aSummary struct {
	Conns  int     `json:"conns"`
	Config string  `json:"config"`
	RPS    summary `json:"rps"`
	P50MS  summary `json:"p50_ms"`
	P99MS  summary `json:"p99_ms"`
	MaxMS  summary `json:"max_ms"`
	CPU    summary `json:"cpu_us_per_request"`
	Errors int64   `json:"errors"`
}

type phaseAResult struct {
	Configs      []configuration `json:"configs"`
	Runs         []aRun          `json:"runs"`
	Summaries    []aSummary      `json:"summaries"`
	NginxWorkers int             `json:"nginx_workers"`
	APIRequests  int64           `json:"apic_requests"`
	APIBadAuth   int64           `json:"apic_bad_auth"`
}

// run returns the run of a round, or nil.
func (a *phaseAResult) run(conns int, cfg string, round int) *aRun {
	for i := range a.Runs {
		if r := &a.Runs[i]; r.Conns == conns && r.Config == cfg && r.Round == round {
			return r
		}
	}
	return nil
}

// summary returns the summary of a configuration and connection count.
func (a *phaseAResult) summary(conns int, cfg string) aSummary {
	for _, s := range a.Summaries {
		if s.Conns == conns && s.Config == cfg {
			return s
		}
	}
	return aSummary{Conns: conns, Config: cfg}
}

func (b *bench) phaseA(ctx context.Context) {
	a := &phaseAResult{Configs: aConfigs}
	b.res.A = a
	targets, cleanup, err := b.startA(ctx)
	defer cleanup()
	if err != nil {
		b.miss("A: %v", err)
		return
	}
	a.NginxWorkers = len(targets[nginxConf.Key].pids())
	for _, c := range b.s.Conns {
		for r := 1; r <= b.s.Rounds; r++ {
			for _, cfg := range aConfigs {
				if ctx.Err() != nil {
					return
				}
				t := targets[cfg.Key]
				b.logf("A: %s, %d connections, round %d/%d", cfg.Key, c, r, b.s.Rounds)
				label := fmt.Sprintf("a-%d-%s-%d", c, cfg.Key, r)
				if _, err := b.wrk(ctx, wrkRun{label + "-warmup", c, b.s.Warmup, t.url, t.script}); err != nil {
					b.miss("A %s c=%d round %d (warm-up): %v", cfg.Key, c, r, err)
					continue
				}
				pids := t.pids()
				bad0 := b.up.counts().BadAuth
				cpu0, err0 := cpuTicks(pids)
				res, err := b.wrk(ctx, wrkRun{label, c, b.s.Duration, t.url, t.script})
				cpu1, err1 := cpuTicks(pids)
				bad := b.up.counts().BadAuth - bad0
				if err != nil {
					b.miss("A %s c=%d round %d: %v", cfg.Key, c, r, err)
					continue
				}
				if err0 != nil || err1 != nil {
					b.miss("A %s c=%d round %d: CPU time: %v", cfg.Key, c, r, firstErr(err0, err1))
					continue
				}
				cpuUS := float64(cpu1-cpu0) / float64(b.clkTck) * 1e6 / float64(res.Requests)
				a.Runs = append(a.Runs, aRun{
					Conns: c, Config: cfg.Key, Round: r, RPS: res.RPS(),
					P50MS: res.P50US / 1000, P99MS: res.P99US / 1000, MaxMS: res.MaxUS / 1000,
					Errors: res.Errors(), CPUUSReq: cpuUS, BadAuth: bad, WrkResult: res,
				})
				if cfg == apic {
					a.APIRequests += res.Requests
					a.APIBadAuth += bad
				}
			}
		}
	}
	for _, c := range b.s.Conns {
		for _, cfg := range aConfigs {
			var rps, p50, p99, mx, cpu []float64
			var errs int64
			for _, r := range a.Runs {
				if r.Conns != c || r.Config != cfg.Key {
					continue
				}
				rps, p50, p99 = append(rps, r.RPS), append(p50, r.P50MS), append(p99, r.P99MS)
				mx, cpu = append(mx, r.MaxMS), append(cpu, r.CPUUSReq)
				errs += r.Errors
			}
			a.Summaries = append(a.Summaries, aSummary{
				Conns: c, Config: cfg.Key, RPS: summarize(rps), P50MS: summarize(p50),
				P99MS: summarize(p99), MaxMS: summarize(mx), CPU: summarize(cpu), Errors: errs,
			})
		}
	}
}

// startA starts nginx, static Caddy and apic_auth Caddy, and returns the
// four targets. cleanup stops what only A uses.
func (b *bench) startA(ctx context.Context) (map[string]target, func(), error) {
	var stop []*proc
	cleanup := func() {
		for i := len(stop) - 1; i >= 0; i-- {
			b.procs.stop(stop[i])
		}
	}
	plain, bearer, err := b.wrkScripts()
	if err != nil {
		return nil, cleanup, err
	}
	ngx, ngxURL, err := b.startNginx(ctx)
	if err != nil {
		return nil, cleanup, err
	}
	stop = append(stop, ngx)
	st, err := b.sharedStatic(ctx)
	if err != nil {
		return nil, cleanup, err
	}
	ln, err := listenTCP()
	if err != nil {
		return nil, cleanup, err
	}
	ap, err := b.startCaddy(ctx, "caddy-apic", apicAuth, ln, b.simURL, true)
	ln.Close()
	if err != nil {
		return nil, cleanup, err
	}
	stop = append(stop, ap.proc)
	if err := expect200(ctx, ap.url+"/api/orgs"); err != nil {
		return nil, cleanup, fmt.Errorf("apic_auth Caddy: %v", err)
	}
	if err := b.checkLoopback(); err != nil {
		return nil, cleanup, err
	}
	self := os.Getpid()
	workers := children(ngx.pid())
	b.logf("nginx at %s (%d workers), static Caddy at %s, apic_auth Caddy at %s", ngxURL, len(workers), st.addr, ap.addr)
	return map[string]target{
		direct.Key:    {"http://" + b.upAddr + "/api/orgs", bearer, func() []int { return []int{self} }},
		nginxConf.Key: {ngxURL + "/api/orgs", plain, func() []int { return workers }},
		static.Key:    {st.url + "/api/orgs", plain, func() []int { return []int{st.pid()} }},
		apic.Key:      {ap.url + "/api/orgs", plain, func() []int { return []int{ap.pid()} }},
	}, cleanup, nil
}

// startNginx starts nginx with a static Authorization header and
// keepalive to the upstream. Its listener is opened here and handed over
// as fd 3 through the NGINX variable, the way nginx passes its listeners
// to a new binary on an upgrade: nginx uses an inherited socket whose
// address matches a listen directive instead of binding its own (a bind
// would fail, the port being taken by that socket).
func (b *bench) startNginx(ctx context.Context) (*proc, string, error) {
	dir := filepath.Join(b.work, "nginx")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	ln, err := listenTCP()
	if err != nil {
		return nil, "", err
	}
	defer ln.Close()
	addr := ln.Addr().String()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
worker_processes %s;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events {
	worker_connections 4096;
}
http {
	access_log off;
	client_body_temp_path %s/body;
	proxy_temp_path %s/proxy;
	upstream bench_upstream {
		server %s;
		keepalive 64;
	}
	server {
		listen %s;
		location / {
			proxy_pass http://bench_upstream;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Authorization "Bearer %s";
		}
	}
}
`, user, b.s.NginxWorkers, dir, dir, dir, dir, b.upAddr, addr, b.token)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	base := []string{"-e", filepath.Join(dir, "error.log"), "-p", dir + "/", "-c", confPath}
	if out, err := exec.CommandContext(ctx, b.nginxBin, append([]string{"-t"}, base...)...).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("nginx -t: %v: %s", err, tail(out, 5))
	}
	f, err := inheritable(ln)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	cmd := exec.Command(b.nginxBin, base...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "NGINX=3;")
	p, err := b.procs.start(b.logDir(), "nginx", cmd)
	if err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	if err := expect200(ctx, url+"/"); err != nil {
		errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return p, "", fmt.Errorf("nginx did not answer: %v: %s %s", err, p.logTail(), tail(errLog, 5))
	}
	want := runtime.NumCPU()
	if n, err := strconv.Atoi(b.s.NginxWorkers); err == nil {
		want = n
	}
	if err := waitFor(ctx, p, 10*time.Second, "nginx workers", func() bool { return len(children(p.pid())) >= want }); err != nil {
		return p, "", err
	}
	return p, url, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------- B

type stormRow struct {
	stormResult
	Tokens      int    `json:"token_requests"`
	Waits       int    `json:"waits"`
	StateBefore string `json:"state_before,omitempty"`
}

type phaseBResult struct {
	Apic   *stormRow `json:"apic,omitempty"`
	Static *stormRow `json:"static,omitempty"`
}

func (b *bench) phaseB(ctx context.Context) {
	r := &phaseBResult{}
	b.res.B = r
	if row, err := b.stormApic(ctx); err != nil {
		b.miss("B: %v", err)
	} else {
		r.Apic = row
	}
	if ctx.Err() != nil {
		return
	}
	// The same storm on a fresh static Caddy: the cost of the new
	// connections at once, without a token to wait for.
	if row, err := b.stormStatic(ctx); err != nil {
		b.miss("B: static Caddy: %v", err)
	} else {
		r.Static = row
	}
}

func (b *bench) stormApic(ctx context.Context) (*stormRow, error) {
	ln, err := listenTCP()
	if err != nil {
		return nil, err
	}
	c, err := b.startCaddy(ctx, "caddy-storm", apicAuth, ln, b.simURL, true)
	ln.Close()
	if err != nil {
		return nil, err
	}
	defer b.procs.stop(c.proc)
	// Cold: the identity is loaded and has asked for nothing yet.
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	if st.State != "no_token" {
		return nil, fmt.Errorf("B: the apic_auth proxy is not cold before the storm (state %s)", st.State)
	}
	before := simTokens(b.sim)
	b.logf("B: %d concurrent requests on a cold apic_auth proxy (state %s)", b.s.Storm, st.State)
	res, err := b.runStorm(ctx, c.url+"/api/orgs")
	if err != nil {
		return nil, err
	}
	row := &stormRow{stormResult: res, Tokens: simTokens(b.sim) - before, StateBefore: st.State}
	after, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	row.Waits = after.Waits
	return row, nil
}

func (b *bench) stormStatic(ctx context.Context) (*stormRow, error) {
	ln, err := listenTCP()
	if err != nil {
		return nil, err
	}
	c, err := b.startCaddy(ctx, "caddy-storm-static", staticHeader, ln, "", true)
	ln.Close()
	if err != nil {
		return nil, err
	}
	defer b.procs.stop(c.proc)
	b.logf("B: %d concurrent requests on a fresh static Caddy", b.s.Storm)
	res, err := b.runStorm(ctx, c.url+"/api/orgs")
	if err != nil {
		return nil, err
	}
	return &stormRow{stormResult: res}, nil
}

// ---------------------------------------------------------------- C

type refreshRow struct {
	wrkResult
	RPS float64 `json:"rps"`
}

type phaseCResult struct {
	Apic          *refreshRow               `json:"apic,omitempty"`
	Static        *refreshRow               `json:"static,omitempty"`
	Tokens        int                       `json:"token_requests"`
	Expected      int                       `json:"token_requests_expected"`
	Waits         int                       `json:"waits"`
	BadAuth       int64                     `json:"bad_auth"`
	Expired       int64                     `json:"expired"`
	TokenOutcomes map[string]map[string]int `json:"token_outcomes"`
	StateAtEnd    string                    `json:"state_at_end"`
}

func (b *bench) phaseC(ctx context.Context) {
	r := &phaseCResult{Expected: int(float64(b.s.RefreshSeconds)/1.5 + 0.5)}
	b.res.C = r
	if err := b.refreshApic(ctx, r); err != nil {
		b.miss("C: %v", err)
	}
	if ctx.Err() != nil {
		return
	}
	st, err := b.sharedStatic(ctx)
	if err != nil {
		b.miss("C: static Caddy: %v", err)
		return
	}
	script := filepath.Join(b.work, "report.lua")
	if err := writeWrkScript(script, "", ""); err != nil {
		b.miss("C: %v", err)
		return
	}
	b.logf("C: %d s at 32 connections through static Caddy", b.s.RefreshSeconds)
	res, err := b.wrk(ctx, wrkRun{"c-static", 32, b.s.RefreshSeconds, st.url + "/api/orgs", script})
	if err != nil {
		b.miss("C: static Caddy: %v", err)
		return
	}
	r.Static = &refreshRow{wrkResult: res, RPS: res.RPS()}
}

func (b *bench) refreshApic(ctx context.Context, r *phaseCResult) error {
	cfg := apicsim.DefaultConfig()
	cfg.TokenTTL = 2 * time.Second
	sim2, sim2URL, err := b.startSim(cfg)
	if err != nil {
		return err
	}
	ln, err := listenTCP()
	if err != nil {
		return err
	}
	c, err := b.startCaddy(ctx, "caddy-refresh", apicAuth, ln, sim2URL, true)
	ln.Close()
	if err != nil {
		return err
	}
	defer b.procs.stop(c.proc)
	if err := expect200(ctx, c.url+"/api/orgs"); err != nil {
		return fmt.Errorf("apic_auth with 2 s tokens: %v", err)
	}
	script := filepath.Join(b.work, "report.lua")
	if err := writeWrkScript(script, "", ""); err != nil {
		return err
	}
	st0, err := c.status(ctx)
	if err != nil {
		return err
	}
	tok0, up0 := simTokens(sim2), b.up.counts()
	b.logf("C: %d s at 32 connections through apic_auth, tokens of 2 s", b.s.RefreshSeconds)
	res, err := b.wrk(ctx, wrkRun{"c-apic", 32, b.s.RefreshSeconds, c.url + "/api/orgs", script})
	if err != nil {
		return err
	}
	st1, err := c.status(ctx)
	if err != nil {
		return err
	}
	up1 := b.up.counts()
	r.Apic = &refreshRow{wrkResult: res, RPS: res.RPS()}
	r.Tokens = simTokens(sim2) - tok0
	r.Waits = st1.Waits - st0.Waits
	r.BadAuth = up1.BadAuth - up0.BadAuth
	r.Expired = up1.Expired - up0.Expired
	r.TokenOutcomes = sim2.Stats().Token
	r.StateAtEnd = st1.State
	return nil
}

// ---------------------------------------------------------------- D

// dRound is one upload of phase D.
type dRound struct {
	Config       string  `json:"config"`
	Body         string  `json:"body"` // "length" or "chunked"
	Round        int     `json:"round"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	MiBps        float64 `json:"mib_per_s"`
	RSSBeforeMiB float64 `json:"rss_before_mib"`
	PeakMiB      float64 `json:"peak_rss_mib"`
}

type phaseDResult struct {
	Configs  []configuration `json:"configs"`
	Rounds   []dRound        `json:"rounds"`
	HWMReset bool            `json:"hwm_reset"`
}

// rounds returns the uploads of a configuration and body kind.
func (d *phaseDResult) rounds(cfg, body string) []dRound {
	var out []dRound
	for _, r := range d.Rounds {
		if r.Config == cfg && r.Body == body {
			out = append(out, r)
		}
	}
	return out
}

// uploader is one configuration of phase D.
type uploader struct {
	cfg  configuration
	pid  int
	url  string
	unix string // the socket to connect to, if not the URL's host
	// multipart: the body is a multipart upload to the simulator's
	// publish endpoint, which answers 201 and, in headers, the byte count
	// and SHA-256 it received.
	multipart bool
}

func (b *bench) phaseD(ctx context.Context) {
	d := &phaseDResult{Configs: []configuration{static, apic, quick}, HWMReset: true}
	b.res.D = d
	ups, cleanup, err := b.startD(ctx)
	defer cleanup()
	if err != nil {
		b.miss("D: %v", err)
		return
	}
	mp := newMultipartBody(b.s.UploadBytes)
	b.logf("D: hashing the %d-byte multipart body", mp.size())
	sum, err := mp.sha256()
	if err != nil {
		b.miss("D: %v", err)
		return
	}
	for _, body := range []string{"length", "chunked"} {
		for r := 1; r <= b.s.UploadRounds; r++ {
			for _, u := range ups {
				if ctx.Err() != nil {
					return
				}
				b.logf("D: %d MiB upload through %s (%s, round %d/%d)", b.s.UploadBytes>>20, u.cfg.Key, body, r, b.s.UploadRounds)
				round, err := b.uploadOnce(ctx, d, u, body, r, sum)
				if err != nil {
					b.miss("D: upload %s %s round %d: %v", u.cfg.Key, body, r, err)
					continue
				}
				d.Rounds = append(d.Rounds, round)
			}
		}
	}
	if !d.HWMReset {
		b.logf("D: VmHWM could not be reset: the peaks are the processes' so far")
	}
}

// startD starts the three proxies of D and logs in those with apic_auth.
func (b *bench) startD(ctx context.Context) ([]uploader, func(), error) {
	var stop []*proc
	cleanup := func() {
		for i := len(stop) - 1; i >= 0; i-- {
			b.procs.stop(stop[i])
		}
	}
	var ups []uploader
	for _, k := range []struct {
		cfg  configuration
		kind caddyKind
	}{{static, staticHeader}, {apic, apicAuth}} {
		ln, err := listenTCP()
		if err != nil {
			return nil, cleanup, err
		}
		c, err := b.startCaddy(ctx, "caddy-upload-"+k.cfg.Key, k.kind, ln, b.simURL, true)
		ln.Close()
		if err != nil {
			return nil, cleanup, err
		}
		stop = append(stop, c.proc)
		// apic_auth logs in on the first request, not during the upload.
		if err := expect200(ctx, c.url+"/api/orgs"); err != nil {
			return nil, cleanup, fmt.Errorf("%s: %v", k.cfg.Key, err)
		}
		ups = append(ups, uploader{cfg: k.cfg, pid: c.pid(), url: c.url + "/api/upload"})
	}

	// The quick start, as a user runs it: on a unix socket, secrets in
	// the environment.
	sock := filepath.Join(b.work, "quick.sock")
	cmd := exec.Command(b.proxyBin, "apic-proxy", "--from", "unix/"+sock)
	cmd.Env = append(b.childEnv(), "APIC_SERVER="+b.simURL)
	p, err := b.procs.start(b.logDir(), "apic-proxy", cmd)
	if err != nil {
		return nil, cleanup, err
	}
	stop = append(stop, p)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	// The quick start has no ready signal but its socket: poll it.
	if err := waitFor(ctx, p, 30*time.Second, "apic-proxy socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}); err != nil {
		return nil, cleanup, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	if code, err := get(ctx, client, "http://localhost/api/me"); err != nil || code != http.StatusOK {
		return nil, cleanup, fmt.Errorf("apic-proxy: GET /api/me: status %d, %v", code, err)
	}
	ups = append(ups, uploader{cfg: quick, pid: p.pid(), unix: sock, multipart: true,
		url: "http://localhost/api/catalogs/localtest/sandbox/publish"})
	if err := b.checkLoopback(); err != nil {
		return nil, cleanup, err
	}
	return ups, cleanup, nil
}

// uploadOnce sends one upload through u, with the upload client, and
// measures it.
func (b *bench) uploadOnce(ctx context.Context, d *phaseDResult, u uploader, body string, round int, sum string) (dRound, error) {
	before, err := statusKB(u.pid, "VmRSS")
	if err != nil {
		return dRound{}, err
	}
	// Reset the peak RSS to the current RSS, so that each upload's peak
	// is its own.
	if err := resetPeakRSS(u.pid); err != nil {
		d.HWMReset = false
	}
	args := []string{"upload", "-url", u.url, "-bytes", strconv.FormatInt(b.s.UploadBytes, 10)}
	if u.unix != "" {
		args = append(args, "-unix", u.unix)
	}
	if body == "chunked" {
		args = append(args, "-chunked")
	}
	if u.multipart {
		args = append(args, "-multipart")
	}
	var res uploadResult
	if err := b.runClient(ctx, &res, args...); err != nil {
		return dRound{}, err
	}
	peak, err := statusKB(u.pid, "VmHWM")
	if err != nil {
		return dRound{}, err
	}
	got := struct {
		ReceivedBytes int64  `json:"received_bytes"`
		SHA256        string `json:"sha256"`
	}{res.ReceivedBytes, res.ReceivedSHA256}
	if !u.multipart {
		_ = json.Unmarshal(res.Answer, &got) // the static upstream's answer
	}
	wantStatus := http.StatusOK
	if u.multipart {
		wantStatus = http.StatusCreated
	}
	if res.Status != wantStatus || got.ReceivedBytes != res.Bytes || (u.multipart && got.SHA256 != sum) {
		return dRound{}, fmt.Errorf("status %d, received %d of %d bytes, SHA-256 ok %v: %.300s",
			res.Status, got.ReceivedBytes, res.Bytes, !u.multipart || got.SHA256 == sum, res.Answer)
	}
	return dRound{
		Config: u.cfg.Key, Body: body, Round: round, Bytes: res.Bytes, Seconds: res.Seconds,
		MiBps: float64(res.Bytes) / res.Seconds / (1 << 20), RSSBeforeMiB: float64(before) / 1024, PeakMiB: float64(peak) / 1024,
	}, nil
}

// zeros reads n zero bytes.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// multipartBody is the upload of the simulator's publish endpoint: a
// product, its API and a wsdl part of n zero bytes, which the simulator
// reads, counts and hashes but does not parse (apicsim.PublishUpload).
type multipartBody struct{ n int64 }

func newMultipartBody(n int64) multipartBody { return multipartBody{n: n} }

func (m multipartBody) upload() (io.Reader, int64, string) {
	return apicsim.PublishUpload("bench", "1.0.0", &zeros{n: m.n}, m.n)
}

func (m multipartBody) size() int64 { _, n, _ := m.upload(); return n }

func (m multipartBody) contentType() string { _, _, ct := m.upload(); return ct }

func (m multipartBody) reader() io.Reader { r, _, _ := m.upload(); return r }

// sha256 returns the hex SHA-256 of the body, computed before the uploads
// so that hashing is not timed.
func (m multipartBody) sha256() (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, m.reader()); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ---------------------------------------------------------------- E

type phaseEResult struct {
	MS      []float64 `json:"ms"`
	Summary summary   `json:"summary"`
}

func (b *bench) phaseE(ctx context.Context) {
	e := &phaseEResult{}
	b.res.E = e
	// One listener for every start: a request made before Caddy serves
	// waits in its backlog.
	ln, err := listenTCP()
	if err != nil {
		b.miss("E: %v", err)
		return
	}
	defer ln.Close()
	b.logf("E: %d starts of apic_auth Caddy, each to its first proxied 200", b.s.Starts)
	for i := 1; i <= b.s.Starts; i++ {
		if ctx.Err() != nil {
			return
		}
		took, err := b.startOnce(ctx, ln, i)
		if err != nil {
			b.miss("E: start %d: %v", i, err)
			continue
		}
		e.MS = append(e.MS, ms(took))
	}
	e.Summary = summarize(e.MS)
}

// startOnce starts apic_auth Caddy and times it to the first proxied 200.
func (b *bench) startOnce(ctx context.Context, ln *net.TCPListener, i int) (time.Duration, error) {
	before := simTokens(b.sim)
	t0 := time.Now()
	c, err := b.startCaddy(ctx, fmt.Sprintf("caddy-start-%d", i), apicAuth, ln, b.simURL, false)
	if err != nil {
		return 0, err
	}
	defer b.procs.stop(c.proc)
	errc := make(chan error, 1)
	go func() { errc <- expect200(ctx, c.url+"/api/orgs") }()
	select {
	case err = <-errc:
	case <-c.done:
		return 0, fmt.Errorf("exited (%v): %s", c.err, c.logTail())
	}
	took := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, c.logTail())
	}
	if n := simTokens(b.sim) - before; n != 1 {
		return 0, fmt.Errorf("%d token requests, want 1", n)
	}
	return took, nil
}
