package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ---------------------------------------------------------------- F

// phaseFResult is the fleet: FleetSize apic_auth proxies sharing one
// session in Redis, started cold (Redis empty) and warm (the session in
// Redis), round after round.
type phaseFResult struct {
	Size int `json:"size"`
	// ColdMS and WarmMS are, per round, the time from the first start to
	// the slowest proxy's first proxied 200; ColdTokens and WarmTokens
	// the token requests of the start.
	ColdMS []float64 `json:"cold_ms"`
	// AloneMS and AloneTokens are the same for proxies that do not
	// share a session, each logging in: the baseline, in the same run.
	AloneMS     []float64 `json:"alone_ms"`
	AloneTokens []int     `json:"alone_tokens"`
	Alone       summary   `json:"alone"`
	WarmMS      []float64 `json:"warm_ms"`
	ColdTokens  []int     `json:"cold_tokens"`
	WarmTokens  []int     `json:"warm_tokens"`
	// ColdOps and WarmOps are the fleet's storage operations until the
	// slowest proxy's first 200.
	ColdOps []uint64 `json:"cold_ops"`
	WarmOps []uint64 `json:"warm_ops"`
	Cold    summary  `json:"cold"`
	Warm    summary  `json:"warm"`
	// OpsPer10k are the fleet's storage operations per 10,000 proxied
	// requests, after Requests[i] requests.
	Requests  []int     `json:"requests"`
	OpsPer10k []float64 `json:"ops_per_10k"`
	// Seconds is how long those requests took.
	Seconds []float64 `json:"seconds"`
}

// fleetStatus is the part of an identity's status phase F reads.
type fleetStatus struct {
	State  string `json:"state"`
	Shared *struct {
		Generation uint64            `json:"generation"`
		StorageOps map[string]uint64 `json:"storage_ops"`
	} `json:"shared_session"`
}

func (b *bench) phaseF(ctx context.Context) {
	f := &phaseFResult{Size: b.s.FleetSize}
	b.res.F = f
	redis, err := b.startRedis(ctx)
	if err != nil {
		b.miss("F: %v", err)
		return
	}
	defer b.procs.stop(redis.proc)
	lns := make([]*net.TCPListener, f.Size)
	for i := range lns {
		if lns[i], err = listenTCP(); err != nil {
			b.miss("F: %v", err)
			return
		}
		defer lns[i].Close()
	}
	b.logf("F: %d rounds of %d proxies sharing a session in Redis, cold then warm", b.s.Starts, f.Size)
	for round := 1; round <= b.s.Starts && ctx.Err() == nil; round++ {
		if err := redis.flush(ctx); err != nil {
			b.miss("F: round %d: %v", round, err)
			return
		}
		took, tokens, err := b.fleetStart(ctx, lns, "", fmt.Sprintf("alone-%d", round), nil)
		if err != nil {
			b.miss("F: round %d: %v", round, err)
			return
		}
		f.AloneMS, f.AloneTokens = append(f.AloneMS, ms(took)), append(f.AloneTokens, tokens)
		for _, warm := range []bool{false, true} {
			last := warm && round == b.s.Starts
			var ops uint64
			took, tokens, err := b.fleetStart(ctx, lns, redis.addr, fmt.Sprintf("fleet-%d-%v", round, warm), func(cs []*caddy) error {
				var err error
				if ops, err = fleetOpsCount(ctx, cs); err != nil || !last {
					return err
				}
				return b.fleetOps(ctx, f, cs)
			})
			if err != nil {
				b.miss("F: round %d: %v", round, err)
				return
			}
			if warm {
				f.WarmMS, f.WarmTokens, f.WarmOps = append(f.WarmMS, ms(took)), append(f.WarmTokens, tokens), append(f.WarmOps, ops)
			} else {
				f.ColdMS, f.ColdTokens, f.ColdOps = append(f.ColdMS, ms(took)), append(f.ColdTokens, tokens), append(f.ColdOps, ops)
			}
		}
	}
	f.Cold, f.Warm, f.Alone = summarize(f.ColdMS), summarize(f.WarmMS), summarize(f.AloneMS)
}

// fleetStart starts a proxy on each listener at once, waits for every
// one's first proxied 200, runs then (if any) on the running fleet, and
// stops it. It returns the time from the first start to the slowest
// proxy's 200, and the token requests made.
func (b *bench) fleetStart(ctx context.Context, lns []*net.TCPListener, redisAddr, name string, then func([]*caddy) error) (time.Duration, int, error) {
	before := simTokens(b.sim)
	t0 := time.Now()
	cs := make([]*caddy, len(lns))
	defer func() {
		for _, c := range cs {
			if c != nil {
				b.procs.stop(c.proc)
			}
		}
	}()
	for i, ln := range lns {
		c, err := b.startCaddyText(fmt.Sprintf("%s-%d", name, i), ln, func(addr, admin string) string {
			return b.fleetCaddyfile(addr, admin, redisAddr)
		})
		if err != nil {
			return 0, 0, err
		}
		cs[i] = c
	}
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			errc := make(chan error, 1)
			go func() { errc <- expect200(ctx, c.url+"/api/orgs") }()
			select {
			case errs[i] = <-errc:
			case <-c.done:
				errs[i] = fmt.Errorf("%s exited (%v): %s", c.name, c.err, c.logTail())
			}
		})
	}
	wg.Wait()
	took := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	if then != nil {
		if err := then(cs); err != nil {
			return 0, 0, err
		}
	}
	return took, simTokens(b.sim) - before, nil
}

// fleetOps sends 10,000 and then 40,000 more proxied requests across the
// fleet and records its storage operations per 10,000 requests after
// each: they come of the proxies' schedule, not of the requests.
func (b *bench) fleetOps(ctx context.Context, f *phaseFResult, cs []*caddy) error {
	start, err := fleetOpsCount(ctx, cs)
	if err != nil {
		return err
	}
	t0 := time.Now()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	sent := 0
	for _, upTo := range []int{10000, 50000} {
		for sent < upTo {
			errs := make([]error, len(cs))
			var wg sync.WaitGroup
			for i, c := range cs {
				wg.Go(func() {
					code, err := get(ctx, client, c.url+"/api/me")
					if err == nil && code != http.StatusOK {
						err = fmt.Errorf("GET /api/me through %s: %d", c.name, code)
					}
					errs[i] = err
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
			sent += len(cs)
		}
		n, err := fleetOpsCount(ctx, cs)
		if err != nil {
			return err
		}
		f.Requests = append(f.Requests, sent)
		f.OpsPer10k = append(f.OpsPer10k, float64(n-start)*10000/float64(sent))
		f.Seconds = append(f.Seconds, time.Since(t0).Seconds())
	}
	return nil
}

// fleetOpsCount sums the fleet's storage operations so far.
func fleetOpsCount(ctx context.Context, cs []*caddy) (uint64, error) {
	var n uint64
	for _, c := range cs {
		st, err := fleetStatusOf(ctx, c)
		if err != nil {
			return 0, err
		}
		if st.Shared == nil {
			return 0, errors.New("the status has no shared_session")
		}
		for _, v := range st.Shared.StorageOps {
			n += v
		}
	}
	return n, nil
}

func fleetStatusOf(ctx context.Context, c *caddy) (fleetStatus, error) {
	var ids []fleetStatus
	if err := c.adminJSON(ctx, "/apic_auth/status", &ids); err != nil {
		return fleetStatus{}, err
	}
	if len(ids) != 1 {
		return fleetStatus{}, fmt.Errorf("admin status of %s: %d identities, want 1", c.name, len(ids))
	}
	return ids[0], nil
}

// fleetCaddyfile is apic_auth's Caddyfile with the session shared in the
// Redis at redisAddr (none when ""); each proxy logs in (or adopts the
// session) at start.
func (b *bench) fleetCaddyfile(addr, admin, redisAddr string) string {
	shared := ""
	if redisAddr != "" {
		shared = fmt.Sprintf("\n\t\tshared_session {\n\t\t\tstorage redis {\n\t\t\t\taddress %s\n\t\t\t}\n\t\t}", redisAddr)
	}
	return fmt.Sprintf(`{
	admin unix/%s
	persist_config off
	auto_https off
	log {
		level WARN
	}
}

http://%s {
	bind fd/3
	apic_auth {
		name fleet
		server %s
		realm {env.APIC_REALM}
		username {env.APIC_USERNAME}
		password {env.APIC_PASSWORD}
		client_id {env.APIC_CLIENT_ID}
		client_secret {env.APIC_CLIENT_SECRET}%s
	}
	reverse_proxy %s
}
`, admin, addr, b.simURL, shared, b.upAddr)
}

// redisServer is a redis-server of the run, on a loopback port.
type redisServer struct {
	proc *proc
	addr string
}

// startRedis starts redis-server without persistence on a loopback port
// that was free a moment before (redis-server takes no listener), trying
// another port when that one was taken meanwhile.
func (b *bench) startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is missing (apt-get install redis-server)")
	}
	dir := filepath.Join(b.work, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var last error
	for attempt := range 5 {
		ln, err := listenTCP()
		if err != nil {
			return nil, err
		}
		addr := ln.Addr().(*net.TCPAddr)
		ln.Close()
		cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(addr.Port), "--save", "", "--appendonly", "no", "--dir", dir)
		p, err := b.procs.start(b.logDir(), fmt.Sprintf("redis-%d", attempt), cmd)
		if err != nil {
			return nil, err
		}
		r := &redisServer{proc: p, addr: addr.String()}
		if last = r.ping(ctx); last == nil {
			return r, nil
		}
		b.procs.stop(p)
	}
	return nil, fmt.Errorf("redis-server did not start: %v", last)
}

// ping waits until the server answers PING, or exits.
func (r *redisServer) ping(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.do(ctx, "PING"); err == nil {
			return nil
		} else if r.proc.exited() || time.Now().After(deadline) {
			return fmt.Errorf("%v: %s", err, r.proc.logTail())
		}
		select {
		case <-r.proc.done:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// flush empties the server.
func (r *redisServer) flush(ctx context.Context) error {
	_, err := r.do(ctx, "FLUSHALL")
	return err
}

// do sends one inline command and returns the first line of the answer.
func (r *redisServer) do(ctx context.Context, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(buf[:n]))
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line)
	}
	return line, nil
}

func writeF(p printer, r *results) {
	f := r.F
	p("#### F. A fleet of %d proxies sharing one session in Redis, %d rounds", f.Size, len(f.ColdMS))
	p("")
	if !f.Cold.ok() {
		p("Not measured.")
		return
	}
	p("| start | token requests, each round | storage operations of the fleet until then | first start to the slowest proxy's first proxied 200 (median) | min–max |")
	p("|---|---|---|---|---|")
	p("| cold (Redis empty) | %s | %s | %.0f ms | %s |", join(f.ColdTokens), join(f.ColdOps), f.Cold.Median, span(f.Cold, 0))
	p("| warm (session in Redis) | %s | %s | %.0f ms | %s |", join(f.WarmTokens), join(f.WarmOps), f.Warm.Median, span(f.Warm, 0))
	p("| baseline: each proxy on its own, no shared session | %s | – | %.0f ms | %s |", join(f.AloneTokens), f.Alone.Median, span(f.Alone, 0))
	p("")
	rc, okc := ratio(f.Cold, f.Alone)
	rw, okw := ratio(f.Warm, f.Alone)
	p("Time to the slowest proxy's first 200, shared / alone (medians of the same run): cold %s, warm %s.", num(rc, 2, okc), num(rw, 2, okw))
	p("")
	var ops []string
	for i, n := range f.Requests {
		ops = append(ops, fmt.Sprintf("%.1f after %d requests (%.0f s)", f.OpsPer10k[i], n, f.Seconds[i]))
	}
	p("Storage operations of the whole fleet per 10,000 proxied requests, on the last warm fleet: %s. A request reads the token in memory; the storage is read at start, at refresh time, after a 401 and at a periodic check (every minute with 8-hour tokens), so the count follows the clock, not the requests. The proxies start at once, each on its own listener, and log in at start: one takes the lock and logs in, the others read the session it stores.", strings.Join(ops, "; "))
}

func join[T any](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
