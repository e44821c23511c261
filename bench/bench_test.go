package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apicclient "github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want summary
	}{
		{nil, summary{}},
		{[]float64{5}, summary{N: 1, Median: 5, Min: 5, Max: 5}},
		{[]float64{3, 1, 2}, summary{N: 3, Median: 2, Min: 1, Max: 3}},
		{[]float64{4, 1, 3, 2}, summary{N: 4, Median: 2.5, Min: 1, Max: 4}},
		{[]float64{10, 10, 1, 10, 10}, summary{N: 5, Median: 10, Min: 1, Max: 10}},
	} {
		in := append([]float64(nil), tc.in...)
		if got := summarize(tc.in); got != tc.want {
			t.Errorf("summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Errorf("summarize reordered its argument: %v, was %v", tc.in, in)
			}
		}
	}
}

func TestNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Millisecond}, {99, 990 * time.Millisecond}, {100, time.Second}, {0.01, time.Millisecond}} {
		if got := nearestRank(d, tc.p); got != tc.want {
			t.Errorf("nearestRank(1..1000 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := nearestRank([]time.Duration{7}, 99); got != 7 {
		t.Errorf("nearestRank of one = %v, want 7", got)
	}
	if got := nearestRank(nil, 50); got != 0 {
		t.Errorf("nearestRank(nil) = %v, want 0", got)
	}
}

func TestRatioAndFormatting(t *testing.T) {
	a, b := summarize([]float64{3, 4, 5}), summarize([]float64{2, 2, 9})
	if v, ok := ratio(a, b); !ok || v != 2 {
		t.Errorf("ratio = %v, %v; want 2, true", v, ok)
	}
	if _, ok := ratio(a, summary{}); ok {
		t.Error("ratio against no measurement is ok")
	}
	if _, ok := ratio(a, summarize([]float64{0})); ok {
		t.Error("ratio against 0 is ok")
	}
	if got := med(a, 1) + " " + span(a, 0) + " " + span(summary{}, 0); got != "4.0 3–5 -" {
		t.Errorf("formatting = %q", got)
	}
	for _, tc := range []struct {
		v      float64
		op     string
		target float64
		want   string
	}{{0.99, ">=", 0.98, "met"}, {0.97, ">=", 0.98, "**missed**"}, {1.06, "<=", 1.05, "**missed**"}, {1, "==", 1, "met"}, {2, "==", 1, "**missed**"}} {
		if got := goal(tc.v, true, tc.op, tc.target); got != tc.want {
			t.Errorf("goal(%v %s %v) = %s, want %s", tc.v, tc.op, tc.target, got, tc.want)
		}
	}
}

// TestParseWrkAgreesWithWrk checks the done hook's JSON against wrk's own
// text in the same output (kept from a real run): requests, duration,
// req/s and the latency distribution.
func TestParseWrkAgreesWithWrk(t *testing.T) {
	out, err := os.ReadFile("testdata/wrk-32conns.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	field := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %s in wrk's output", re)
		}
		return m[1]
	}
	if n, _ := strconv.ParseInt(field(`(\d+) requests in`), 10, 64); n != r.Requests {
		t.Errorf("requests %d, wrk says %d", r.Requests, n)
	}
	if rps, _ := strconv.ParseFloat(field(`Requests/sec:\s+([\d.]+)`), 64); abs(r.RPS()-rps) > 0.01 {
		t.Errorf("req/s %.2f, wrk says %.2f", r.RPS(), rps)
	}
	for _, tc := range []struct {
		pct string
		got float64
	}{{"50", r.P50US}, {"90", r.P90US}, {"99", r.P99US}} {
		v := field(`\s` + tc.pct + `%\s+([\d.]+)ms`)
		ms, _ := strconv.ParseFloat(v, 64)
		// wrk prints two decimals of milliseconds.
		if abs(tc.got/1000-ms) > 0.005 {
			t.Errorf("p%s %.3f ms, wrk says %s ms", tc.pct, tc.got/1000, v)
		}
	}
	if r.Errors() != 0 {
		t.Errorf("errors %d, want 0", r.Errors())
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestParseWrkErrors(t *testing.T) {
	line := func(json string) []byte {
		return []byte("Running 1s test @ http://127.0.0.1:1/\n" + wrkMarker + json + "\n")
	}
	r, err := parseWrk(line(`{"requests":10,"duration_us":2000000,"bytes":1,"p50_us":1,"p90_us":2,"p99_us":3,"max_us":4,"mean_us":1.5,"connect":1,"read":2,"write":3,"status":4,"timeout":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS() != 5 || r.Errors() != 15 {
		t.Errorf("rps %v errors %v, want 5 and 15", r.RPS(), r.Errors())
	}
	for name, out := range map[string][]byte{
		"no result line": []byte("unable to connect to 127.0.0.1:1 Connection refused\n"),
		"bad JSON":       line(`{"requests":10,`),
		"unknown field":  line(`{"requests":10,"duration_us":1,"rps":3}`),
		"no duration":    line(`{"requests":10,"duration_us":0}`),
		"no requests":    line(`{"requests":0,"duration_us":1000}`),
	} {
		if _, err := parseWrk(out); err == nil {
			t.Errorf("%s: parseWrk accepted %q", name, out)
		}
	}
}

func TestLuaString(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer abc.def-_": `"Bearer abc.def-_"`,
		`a"b\c`:            `"a\"b\\c"`,
		"a\nb":             `"a\010b"`,
	} {
		if got := luaString(in); got != want {
			t.Errorf("luaString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestStatTicks(t *testing.T) {
	// A command name with ") " in it, as a process may choose.
	stat := "4242 (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 123 456 789\n"
	got, err := statTicks([]byte(stat))
	if err != nil || got != 325 {
		t.Errorf("statTicks = %d, %v; want 325", got, err)
	}
	if _, err := statTicks([]byte("4242 (x) S 1")); err == nil {
		t.Error("statTicks accepted a short line")
	}
	self, err := cpuTicks([]int{os.Getpid()})
	if err != nil || self < 0 {
		t.Errorf("cpuTicks(self) = %d, %v", self, err)
	}
}

func TestProcNetAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0050":                         "0.0.0.0:80",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443",
	} {
		ip, port, err := procNetAddr(in)
		if err != nil {
			t.Errorf("procNetAddr(%s): %v", in, err)
			continue
		}
		got := fmt.Sprintf("%s:%d", ip, port)
		if strings.Contains(ip.String(), ":") {
			got = fmt.Sprintf("[%s]:%d", ip, port)
		}
		if got != want {
			t.Errorf("procNetAddr(%s) = %s, want %s", in, got, want)
		}
	}
	ln, err := listenTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bad, err := nonLoopbackListeners([]int{os.Getpid()})
	if err != nil || len(bad) != 0 {
		t.Errorf("nonLoopbackListeners(self) = %v, %v; want none", bad, err)
	}
}

func TestParseSettings(t *testing.T) {
	env := map[string]string{"BENCH_ROUNDS": "5", "BENCH_PHASES": "E a", "BENCH_CONNS": "1,64"}
	s, err := parseSettings([]string{"-rounds", "7"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rounds != 7 || s.Duration != 10 || s.UploadBytes != 1<<30 || s.NginxWorkers != "auto" {
		t.Errorf("settings %+v", s)
	}
	if fmt.Sprint(s.Phases, s.Conns) != "[A E] [1 64]" {
		t.Errorf("phases %v conns %v", s.Phases, s.Conns)
	}
	if got := s.commandLine(); got != "BENCH_CONNS=1,64 BENCH_PHASES='E a' go run ./bench -rounds=7" {
		t.Errorf("command line %q", got)
	}
	for _, args := range [][]string{{"-phases", "A G"}, {"-fleet", "0"}, {"-rounds", "0"}, {"-conns", "x"}, {"-nginx-workers", "many"}, {"extra"}} {
		if _, err := parseSettings(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("parseSettings(%q) accepted", args)
		}
	}
}

func TestUpstreamCounts(t *testing.T) {
	u := newUpstream()
	srv := httptest.NewServer(u)
	defer srv.Close()
	jwt := func(exp int64) string {
		claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"exp":%d}`, exp)))
		return "e30." + claims + ".sig"
	}
	send := func(auth, body string) string {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/upload", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	now := time.Now().Unix()
	if got := send("Bearer "+jwt(now+60), "12345"); !strings.Contains(got, `"received_bytes":5`) {
		t.Errorf("answer %s", got)
	}
	send("Bearer "+jwt(now+60), "")
	send("Bearer "+jwt(now-5), "")
	send("", "")
	send("Basic abc", "")
	send("Bearer  ", "")
	got := u.counts()
	want := upstreamCounts{Requests: 6, BadAuth: 3, Expired: 1, DistinctTokens: 2, BodyBytes: 5}
	if got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestStorm(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusBadGateway)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	res := storm(context.Background(), srv.URL+"/", 50, 10*time.Second)
	if res.Requests != 50 || res.OK != 50 || res.Failed != 0 {
		t.Errorf("storm %+v", res)
	}
	if !(res.P50MS <= res.P99MS && res.P99MS <= res.MaxMS && res.MaxMS <= res.WallMS) {
		t.Errorf("latencies out of order: %+v", res)
	}
	res = storm(context.Background(), srv.URL+"/fail", 5, 10*time.Second)
	if res.OK != 0 || res.Failed != 5 || len(res.FirstErrors) != 3 || res.FirstErrors[0] != "status 502" {
		t.Errorf("failing storm %+v", res)
	}
}

func TestMultipartBodyIsPublished(t *testing.T) {
	m := newMultipartBody(1000)
	b, err := io.ReadAll(m.reader())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != m.size() {
		t.Errorf("body %d bytes, size says %d", len(b), m.size())
	}
	sum, err := m.sha256()
	if err != nil {
		t.Fatal(err)
	}
	_, ts := simtest.Start(t)
	c := &apicclient.Client{Server: ts.URL, HTTP: ts.Client(), Credentials: apicclient.Credentials{
		Username: apicsim.DefaultProviderUsername, Password: apicsim.DefaultProviderPassword, Realm: apicsim.DefaultProviderRealm,
		ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
	}}
	tok, err := c.Login(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/catalogs/localtest/sandbox/publish", bytes.NewReader(b))
	req.Header.Set("Content-Type", m.contentType())
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get(apicsim.ReceivedBytesHeader) != strconv.Itoa(len(b)) || resp.Header.Get(apicsim.ReceivedSHA256) != sum {
		t.Errorf("publish: %d, received %s bytes with SHA-256 %s; sent %d with %s: %.300s", resp.StatusCode,
			resp.Header.Get(apicsim.ReceivedBytesHeader), resp.Header.Get(apicsim.ReceivedSHA256), len(b), sum, answer)
	}
}

// TestInheritableNonBlocking checks the listener as a child sees it: its
// fd 3 must be non-blocking (O_NONBLOCK, 04000 in fdinfo's octal flags).
func TestInheritableNonBlocking(t *testing.T) {
	ln, err := listenTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := inheritable(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", "cat /proc/self/fdinfo/3")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^flags:\s+([0-7]+)$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no flags in %q", out)
	}
	flags, _ := strconv.ParseUint(m[1], 8, 64)
	if flags&syscall.O_NONBLOCK == 0 {
		t.Errorf("the child's fd 3 is blocking: flags %s", m[1])
	}
	// The child's copy is the listener itself.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
