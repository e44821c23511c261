package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// results is everything a run measured; -json writes it as it is.
type results struct {
	StartedAt    string        `json:"started_at"`
	Command      string        `json:"command"`
	Commit       string        `json:"commit"`
	ElapsedS     float64       `json:"elapsed_s"`
	Machine      machine       `json:"machine"`
	Settings     *settings     `json:"settings"`
	TokenBytes   int           `json:"token_bytes"`
	A            *phaseAResult `json:"a,omitempty"`
	B            *phaseBResult `json:"b,omitempty"`
	C            *phaseCResult `json:"c,omitempty"`
	D            *phaseDResult `json:"d,omitempty"`
	E            *phaseEResult `json:"e,omitempty"`
	F            *phaseFResult `json:"f,omitempty"`
	BadAuthTotal int64         `json:"bad_auth_total"`
	Missing      []string      `json:"missing"`
}

// writeReports writes the Markdown report (standard output or -md) and,
// with -json, the results as JSON.
func (b *bench) writeReports() error {
	var md strings.Builder
	writeMarkdown(&md, b.res)
	if b.s.MDFile != "" {
		if err := os.WriteFile(b.s.MDFile, []byte(md.String()), 0o644); err != nil {
			return err
		}
	} else if _, err := io.WriteString(os.Stdout, md.String()); err != nil {
		return err
	}
	if b.s.JSONFile == "" {
		return nil
	}
	js, err := json.MarshalIndent(b.res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(b.s.JSONFile, append(js, '\n'), 0o644)
}

// goal returns "met" or "**missed**" for v op target.
func goal(v float64, ok bool, op string, target float64) string {
	if !ok {
		return "-"
	}
	var met bool
	switch op {
	case ">=":
		met = v >= target
	case "<=":
		met = v <= target
	default:
		met = v == target
	}
	if met {
		return "met"
	}
	return "**missed**"
}

func label(key string) string {
	for _, c := range []configuration{direct, nginxConf, static, apic, quick} {
		if c.Key == key {
			return c.Label
		}
	}
	return key
}

// writeMarkdown writes the report of r, a section for BENCHMARKS.md.
func writeMarkdown(w io.Writer, r *results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	s := r.Settings
	m := r.Machine
	p("### Run of %s (`go run ./bench`)", r.StartedAt)
	p("")
	p("- Command: `%s` (commit %s), took %.0f s", r.Command, r.Commit, r.ElapsedS)
	p("- Machine: %d CPUs (%s), %s GiB memory, Linux %s", m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel)
	p("- Load average at start: %s (1, 5, 15 min); at end: %s", m.LoadAtStart, m.LoadAtEnd)
	versions := fmt.Sprintf("%s, Caddy %s (apic-auth-proxy)", m.Go, m.Caddy)
	if m.Nginx != "" {
		versions += ", nginx " + m.Nginx
	}
	if m.Wrk != "" {
		versions += ", wrk " + m.Wrk
	}
	p("- Versions: %s", versions)
	p("- Token: a real simulator token, %d bytes, in every configuration (nginx and static Caddy send it as a fixed header; the upstream-direct run sends it from wrk)", r.TokenBytes)
	p("- Listeners: every TCP listener opened by the benchmark on 127.0.0.1:0 and kept open; Caddy inherits its own as fd 3 (`bind fd/3`) and reports that it runs on `--pingback`, nginx inherits its own through `NGINX=3;`; admin APIs on unix sockets. The upstream and the simulator run in the benchmark's process, the storm and upload clients in processes of their own")
	if r.A != nil {
		p("- wrk: %d s per run after a %d s warm-up, threads = min(connections, 2), --timeout 10s; the four configurations interleaved round-robin, %d rounds per connection count; median of the rounds, min–max beside it. nginx: worker_processes %s (%d workers), upstream keepalive 64. Caddy: log level WARN, no access log, admin API on a unix socket",
			s.Duration, s.Warmup, s.Rounds, s.NginxWorkers, r.A.NginxWorkers)
		p("- CPU/req: user+system CPU time of the proxy process (nginx: its workers; upstream directly: the benchmark's process, which serves the upstream) during the run, divided by the requests; less sensitive to other load than req/s")
	}
	for _, ph := range s.Phases {
		p("")
		switch ph {
		case "A":
			writeA(p, r)
		case "B":
			writeB(p, r)
		case "C":
			writeC(p, r)
		case "D":
			writeD(p, r)
		case "E":
			writeE(p, r)
		case "F":
			writeF(p, r)
		}
	}
	if len(r.Missing) > 0 {
		p("")
		p("#### Not measured")
		p("")
		for _, x := range r.Missing {
			p("- %s", x)
		}
	}
}

type printer func(format string, args ...any)

func writeA(p printer, r *results) {
	a, s := r.A, r.Settings
	p("#### A. Throughput and latency (median of %d rounds, min–max)", s.Rounds)
	p("")
	p("| configuration | conns | req/s | req/s min–max | p50 ms | p99 ms | p99 min–max | max ms | CPU µs/req | CPU min–max | errors |")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range s.Conns {
		for _, cfg := range aConfigs {
			x := a.summary(c, cfg.Key)
			errs := "-"
			if x.RPS.ok() {
				errs = fmt.Sprint(x.Errors)
			}
			p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |", cfg.Label, c,
				med(x.RPS, 0), span(x.RPS, 0), med(x.P50MS, 3), med(x.P99MS, 3), span(x.P99MS, 3),
				med(x.MaxMS, 2), med(x.CPU, 1), span(x.CPU, 1), errs)
		}
	}
	p("")
	head, sep := "| ratio of the medians |", "|---|"
	for _, c := range s.Conns {
		head += fmt.Sprintf(" %d conn%s |", c, plural(c))
		sep += "--:|"
	}
	p("%s goal |", head)
	p("%s---|", sep)
	row := func(name, over string, field func(aSummary) summary, under string, op string, target float64) {
		line := "| " + name + " |"
		var goals []string
		for _, c := range s.Conns {
			v, ok := ratio(field(a.summary(c, over)), field(a.summary(c, under)))
			line += " " + num(v, 3, ok) + " |"
			if op != "" {
				goals = append(goals, goal(v, ok, op, target))
			}
		}
		g := ""
		if op != "" {
			g = fmt.Sprintf("%s %g: %s", op, target, strings.Join(goals, ", "))
		}
		p("%s %s |", line, g)
	}
	rps := func(x aSummary) summary { return x.RPS }
	p99 := func(x aSummary) summary { return x.P99MS }
	cpu := func(x aSummary) summary { return x.CPU }
	row("apic_auth / static Caddy, req/s", apic.Key, rps, static.Key, ">=", 0.98)
	row("apic_auth / static Caddy, p99", apic.Key, p99, static.Key, "<=", 1.05)
	row("apic_auth / static Caddy, CPU per request", apic.Key, cpu, static.Key, "", 0)
	row("apic_auth / nginx, req/s", apic.Key, rps, nginxConf.Key, "", 0)
	row("apic_auth / nginx, p99", apic.Key, p99, nginxConf.Key, "", 0)
	row("static Caddy / nginx, req/s", static.Key, rps, nginxConf.Key, "", 0)
	row("static Caddy / nginx, CPU per request", static.Key, cpu, nginxConf.Key, "", 0)
	p("")
	p("Requests through apic_auth in A: %d; of them without a bearer token at the upstream: **%d** (goal 0). All configurations, whole run: %d.",
		a.APIRequests, a.APIBadAuth, r.BadAuthTotal)
	p("")
	p("Every round (req/s / p50 ms / p99 ms / CPU µs per request):")
	p("")
	head, sep = "| configuration | conns |", "|---|--:|"
	for i := 1; i <= s.Rounds; i++ {
		head += fmt.Sprintf(" round %d |", i)
		sep += "--:|"
	}
	p("%s", head)
	p("%s", sep)
	for _, c := range s.Conns {
		for _, cfg := range aConfigs {
			line := fmt.Sprintf("| %s | %d |", cfg.Label, c)
			for i := 1; i <= s.Rounds; i++ {
				if x := a.run(c, cfg.Key, i); x != nil {
					line += fmt.Sprintf(" %.0f / %.3f / %.3f / %.1f |", x.RPS, x.P50MS, x.P99MS, x.CPUUSReq)
				} else {
					line += " - |"
				}
			}
			p("%s", line)
		}
	}
	p("")
	p("Ratios per round (apic_auth / static Caddy, req/s and p99):")
	p("")
	for _, c := range s.Conns {
		line := fmt.Sprintf("- %d conn%s:", c, plural(c))
		for i := 1; i <= s.Rounds; i++ {
			x, y := a.run(c, apic.Key, i), a.run(c, static.Key, i)
			if x == nil || y == nil || y.RPS == 0 || y.P99MS == 0 {
				continue
			}
			line += fmt.Sprintf(" round %d %.3f / %.3f;", i, x.RPS/y.RPS, x.P99MS/y.P99MS)
		}
		p("%s", line)
	}
}

func writeB(p printer, r *results) {
	b := r.B
	p("#### B. Token storm: %d concurrent requests on a cold proxy", r.Settings.Storm)
	p("")
	if b.Apic == nil {
		p("Not measured.")
		return
	}
	p("| configuration | token requests (simulator) | ok | failed | p50 ms | p99 ms | max ms | all done ms | waits (admin API) |")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	x := b.Apic
	p("| Caddy + apic_auth, no token yet | %d (goal 1: %s) | %d | %d | %.2f | %.2f | %.2f | %.2f | %d |",
		x.Tokens, goal(float64(x.Tokens), true, "==", 1), x.OK, x.Failed, x.P50MS, x.P99MS, x.MaxMS, x.WallMS, x.Waits)
	if y := b.Static; y != nil {
		p("| Caddy, static header_up (baseline) | | %d | %d | %.2f | %.2f | %.2f | %.2f | |",
			y.OK, y.Failed, y.P50MS, y.P99MS, y.MaxMS, y.WallMS)
	}
	p("")
	errs := ""
	if len(x.FirstErrors) > 0 {
		errs = " First failures: " + strings.Join(x.FirstErrors, "; ") + "."
	}
	p("Each request on its own new connection, all released at once; latency from the release to the end of the response. apic_auth state before the storm: `%s`.%s", x.StateBefore, errs)
}

func writeC(p printer, r *results) {
	c := r.C
	p("#### C. Refresh under load: tokens of 2 s, %d s at 32 connections", r.Settings.RefreshSeconds)
	p("")
	if c.Apic == nil {
		p("Not measured.")
		return
	}
	p("| configuration | req/s | p50 ms | p99 ms | max ms | errors | token requests | waits | no bearer at upstream | expired at upstream |")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	x := c.Apic
	p("| Caddy + apic_auth | %.0f | %.3f | %.3f | %.3f | %d | %d (expected about %d) | %d | %d | %d |",
		x.RPS, x.P50US/1000, x.P99US/1000, x.MaxUS/1000, x.Errors(), c.Tokens, c.Expected, c.Waits, c.BadAuth, c.Expired)
	maxRatio := "-"
	if y := c.Static; y != nil {
		p("| Caddy, static header_up | %.0f | %.3f | %.3f | %.3f | %d | | | | |",
			y.RPS, y.P50US/1000, y.P99US/1000, y.MaxUS/1000, y.Errors())
		maxRatio = num(x.MaxUS/y.MaxUS, 2, y.MaxUS > 0)
	}
	p("")
	outcomes, _ := json.Marshal(c.TokenOutcomes)
	p("Goals: waits 0 (%s), errors 0 (%s). Max latency apic_auth / static: %s. Token requests by grant and outcome, login included: `%s`; state at the end: `%s`. \"expired at upstream\": requests whose token's `exp` claim was at least 1 s past on arrival.",
		goal(float64(c.Waits), true, "==", 0), goal(float64(x.Errors()), true, "==", 0), maxRatio, outcomes, c.StateAtEnd)
}

func writeD(p printer, r *results) {
	d, s := r.D, r.Settings
	p("#### D. %d MiB upload (`bench upload`, zeros streamed from memory; the upstream discards them, the simulator hashes them)", s.UploadBytes>>20)
	p("")
	p("| configuration | body | MiB/s (median) | MiB/s min–max | seconds (median) | proxy RSS before the first, MiB | proxy peak RSS (VmHWM, max of rounds), MiB | every round, MiB/s (peak MiB) |")
	p("|---|---|--:|--:|--:|--:|--:|---|")
	bodyName := map[string]string{"length": "Content-Length", "chunked": "chunked"}
	mibps := map[string]summary{}
	for _, body := range []string{"length", "chunked"} {
		for _, cfg := range d.Configs {
			rs := d.rounds(cfg.Key, body)
			var tput, secs []float64
			var every []string
			var peaks []float64
			for _, x := range rs {
				tput, secs, peaks = append(tput, x.MiBps), append(secs, x.Seconds), append(peaks, x.PeakMiB)
				every = append(every, fmt.Sprintf("%.1f (%.1f)", x.MiBps, x.PeakMiB))
			}
			peak := summarize(peaks)
			before := "-"
			if len(rs) > 0 {
				before = fmt.Sprintf("%.1f", rs[0].RSSBeforeMiB)
			}
			t := summarize(tput)
			mibps[cfg.Key+","+body] = t
			p("| %s | %s | %s | %s | %s | %s | %s | %s |", cfg.Label, bodyName[body], med(t, 0), span(t, 0),
				med(summarize(secs), 2), before, num(peak.Max, 1, peak.ok()), strings.Join(every, ", "))
		}
	}
	p("")
	rl, okl := ratio(mibps["apic,length"], mibps["static,length"])
	rc, okc := ratio(mibps["apic,chunked"], mibps["static,chunked"])
	reset := ""
	if !d.HWMReset {
		reset = " (the reset failed: peaks are the processes' so far)"
	}
	p("Throughput apic_auth / static (medians): Content-Length %s, chunked %s. %d rounds per body kind, the three proxies interleaved; the peak RSS is reset (clear_refs) before each upload%s. The quick start row is `apic-auth-proxy apic-proxy` on a unix socket, posting a multipart body to the simulator's publish endpoint, which counts and hashes what it receives (the SHA-256 is checked): its throughput is bounded by that hashing, not comparable with the rows above.",
		num(rl, 3, okl), num(rc, 3, okc), s.UploadRounds, reset)
}

func writeE(p printer, r *results) {
	e := r.E
	p("#### E. Start-up: process start to the first proxied 200 (token obtained), %d starts", r.Settings.Starts)
	p("")
	if !e.Summary.ok() {
		p("Not measured.")
		return
	}
	each := make([]string, len(e.MS))
	for i, v := range e.MS {
		each[i] = fmt.Sprintf("%.0f ms", v)
	}
	p("Median **%.0f ms** (%s); each: %s. The first request is sent as the process starts and waits in the listener's backlog until Caddy serves.", e.Summary.Median, span(e.Summary, 0), strings.Join(each, ", "))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
