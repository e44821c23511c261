package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// settings are what a run measures and how long. Each has a flag and an
// environment variable (the flag wins); the defaults are those of the
// report in BENCHMARKS.md.
type settings struct {
	Rounds         int      `json:"rounds"`
	Duration       int      `json:"duration_s"`
	Warmup         int      `json:"warmup_s"`
	Conns          []int    `json:"conns"`
	RefreshSeconds int      `json:"refresh_s"`
	Storm          int      `json:"storm"`
	UploadBytes    int64    `json:"upload_bytes"`
	UploadRounds   int      `json:"upload_rounds"`
	Starts         int      `json:"starts"`
	FleetSize      int      `json:"fleet_size"`
	NginxWorkers   string   `json:"nginx_workers"`
	Phases         []string `json:"phases"`
	Keep           bool     `json:"keep"`

	MDFile   string `json:"-"`
	JSONFile string `json:"-"`

	// given is the settings given by flag or environment, for the
	// report's command line.
	given []string
}

// has reports whether phase p is to run.
func (s *settings) has(p string) bool { return slices.Contains(s.Phases, p) }

// allPhases are the phases, in the order they run.
var allPhases = []string{"A", "B", "C", "D", "E", "F"}

// parseSettings reads the flags of args over the BENCH_* variables of
// getenv.
func parseSettings(args []string, getenv func(string) string, errOut io.Writer) (*settings, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprint(errOut, `usage: go run ./bench [flags]

Runs the benchmarks of BENCHMARKS.md on loopback: the Markdown report on
standard output (or -md), progress on standard error. Each flag's default
comes from the environment variable named in brackets, else the value shown.

`)
		fs.PrintDefaults()
	}
	s := &settings{}
	type opt struct {
		flag, env, def, usage string
	}
	opts := []opt{
		{"rounds", "BENCH_ROUNDS", "3", "A: rounds of each configuration and connection count"},
		{"duration", "BENCH_DURATION", "10", "A: seconds of each wrk run"},
		{"warmup", "BENCH_WARMUP", "2", "A: seconds of the warm-up before each run"},
		{"conns", "BENCH_CONNS", "1 32", "A: connection counts, space- or comma-separated"},
		{"refresh-seconds", "BENCH_REFRESH_SECONDS", "30", "C: seconds of wrk with 2 s tokens"},
		{"storm", "BENCH_STORM", "1000", "B: concurrent requests of the token storm"},
		{"upload-bytes", "BENCH_UPLOAD_BYTES", "1073741824", "D: bytes of each upload"},
		{"upload-rounds", "BENCH_UPLOAD_ROUNDS", "3", "D: rounds of each configuration and body kind"},
		{"starts", "BENCH_STARTS", "5", "E: starts to time; F: rounds of fleet starts"},
		{"fleet", "BENCH_FLEET", "20", "F: proxies in the fleet"},
		{"nginx-workers", "BENCH_NGINX_WORKERS", "auto", "A: nginx worker_processes"},
		{"phases", "BENCH_PHASES", "A B C D E F", "phases to run, of A B C D E F"},
		{"keep", "BENCH_KEEP", "0", "1: keep the temporary directory (configs, logs, wrk output)"},
	}
	vals := make(map[string]*string, len(opts))
	for _, o := range opts {
		def := o.def
		if v := getenv(o.env); v != "" {
			def = v
		}
		vals[o.flag] = fs.String(o.flag, def, o.usage+" ["+o.env+"]")
	}
	fs.StringVar(&s.MDFile, "md", "", "write the Markdown report to this file instead of standard output")
	fs.StringVar(&s.JSONFile, "json", "", "write every figure as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	for _, o := range opts {
		v := *vals[o.flag]
		if setFlags[o.flag] {
			s.given = append(s.given, "-"+o.flag+"="+quoteArg(v))
		} else if getenv(o.env) != "" {
			s.given = append(s.given, o.env+"="+quoteArg(v))
		}
	}

	var err error
	positive := func(name string) int {
		if err != nil {
			return 0
		}
		n, e := strconv.Atoi(*vals[name])
		if e != nil || n < 1 {
			err = fmt.Errorf("-%s: want a positive whole number, got %q", name, *vals[name])
		}
		return n
	}
	s.Rounds = positive("rounds")
	s.Duration = positive("duration")
	s.Warmup = positive("warmup")
	s.RefreshSeconds = positive("refresh-seconds")
	s.Storm = positive("storm")
	s.UploadRounds = positive("upload-rounds")
	s.Starts = positive("starts")
	s.FleetSize = positive("fleet")
	if err != nil {
		return nil, err
	}
	if s.UploadBytes, err = strconv.ParseInt(*vals["upload-bytes"], 10, 64); err != nil || s.UploadBytes < 1 {
		return nil, fmt.Errorf("-upload-bytes: want a positive number of bytes, got %q", *vals["upload-bytes"])
	}
	for _, f := range splitList(*vals["conns"]) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-conns: want connection counts, got %q", *vals["conns"])
		}
		s.Conns = append(s.Conns, n)
	}
	if len(s.Conns) == 0 {
		return nil, fmt.Errorf("-conns: want at least one connection count")
	}
	s.NginxWorkers = *vals["nginx-workers"]
	if n, err := strconv.Atoi(s.NginxWorkers); s.NginxWorkers != "auto" && (err != nil || n < 1) {
		return nil, fmt.Errorf("-nginx-workers: want auto or a count, got %q", s.NginxWorkers)
	}
	for _, p := range splitList(*vals["phases"]) {
		p = strings.ToUpper(p)
		if !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("-phases: unknown phase %s (want A B C D E)", p)
		}
		if !slices.Contains(s.Phases, p) {
			s.Phases = append(s.Phases, p)
		}
	}
	if len(s.Phases) == 0 {
		return nil, fmt.Errorf("-phases: want at least one of A B C D E")
	}
	slices.SortFunc(s.Phases, func(a, b string) int { return slices.Index(allPhases, a) - slices.Index(allPhases, b) })
	switch *vals["keep"] {
	case "1", "true", "yes":
		s.Keep = true
	case "0", "false", "no", "":
	default:
		return nil, fmt.Errorf("-keep: want 1 or 0, got %q", *vals["keep"])
	}
	return s, nil
}

// splitList splits a space- or comma-separated list.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
}

// quoteArg quotes v for a shell when it needs it.
func quoteArg(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t'\"$\\;&|<>*?()") {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// commandLine is the command as it would be typed again.
func (s *settings) commandLine() string {
	var env, flags []string
	for _, g := range s.given {
		if strings.HasPrefix(g, "-") {
			flags = append(flags, g)
		} else {
			env = append(env, g)
		}
	}
	return strings.Join(slices.Concat(env, []string{"go run ./bench"}, flags), " ")
}
