package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// wrkReport is wrk's done hook: it prints one line, wrkMarker and a JSON
// object, that parseWrk reads. Latencies are in microseconds, as wrk
// keeps them.
const wrkReport = `
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format('` + wrkMarker + `{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.3f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
		summary.requests, summary.duration, summary.bytes,
		latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
		e.connect, e.read, e.write, e.status, e.timeout))
end
`

// wrkMarker starts the line that wrkReport prints.
const wrkMarker = "BENCH_WRK "

// wrkResult is one wrk run, as its done hook reports it.
type wrkResult struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	Bytes      int64   `json:"bytes"`
	P50US      float64 `json:"p50_us"`
	P90US      float64 `json:"p90_us"`
	P99US      float64 `json:"p99_us"`
	MaxUS      float64 `json:"max_us"`
	MeanUS     float64 `json:"mean_us"`
	Connect    int64   `json:"connect"`
	Read       int64   `json:"read"`
	Write      int64   `json:"write"`
	Status     int64   `json:"status"` // responses with a status of 400 or more
	Timeout    int64   `json:"timeout"`
}

// RPS returns the requests per second.
func (w wrkResult) RPS() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// Errors returns the socket errors and error statuses together.
func (w wrkResult) Errors() int64 {
	return w.Connect + w.Read + w.Write + w.Status + w.Timeout
}

// parseWrk finds the result line of wrkReport in wrk's output.
func parseWrk(out []byte) (wrkResult, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), wrkMarker)
		if !ok {
			continue
		}
		var r wrkResult
		d := json.NewDecoder(strings.NewReader(line))
		d.DisallowUnknownFields()
		if err := d.Decode(&r); err != nil {
			return wrkResult{}, fmt.Errorf("wrk result line: %v", err)
		}
		if r.DurationUS <= 0 {
			return wrkResult{}, fmt.Errorf("wrk result line: duration %d µs", r.DurationUS)
		}
		if r.Requests <= 0 {
			return wrkResult{}, errors.New("wrk made no request")
		}
		return r, nil
	}
	if err := sc.Err(); err != nil {
		return wrkResult{}, err
	}
	return wrkResult{}, errors.New("no result line in wrk's output")
}

// wrkRun is one wrk invocation.
type wrkRun struct {
	label   string // names the file wrk's output is kept in
	conns   int
	seconds int
	url     string
	script  string // the Lua script: wrkReport, maybe with headers
}

// wrk runs wrk and returns its result. wrk's output is kept in
// <work>/wrk/<label>.txt.
func (b *bench) wrk(ctx context.Context, r wrkRun) (wrkResult, error) {
	threads := min(r.conns, 2)
	cmd := exec.CommandContext(ctx, b.wrkBin, "--latency",
		"-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(r.conns), "-d"+strconv.Itoa(r.seconds)+"s",
		"--timeout", "10s", "-s", r.script, r.url)
	out, err := cmd.CombinedOutput()
	keep := filepath.Join(b.work, "wrk", r.label+".txt")
	_ = os.WriteFile(keep, out, 0o600)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v: %s", r.label, err, tail(out, 5))
	}
	res, err := parseWrk(out)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v: %s", r.label, err, tail(out, 5))
	}
	return res, nil
}

// writeWrkScript writes the Lua script for wrk: the report hook and, when
// header is not empty, a header that every request sends (so that a
// token is not on wrk's command line).
func writeWrkScript(path, header, value string) error {
	var s strings.Builder
	if header != "" {
		fmt.Fprintf(&s, "wrk.headers[%s] = %s\n", luaString(header), luaString(value))
	}
	s.WriteString(wrkReport)
	return os.WriteFile(path, []byte(s.String()), 0o600)
}

// luaString quotes s as a Lua string literal.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tail returns the last n lines of out, on one line.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
