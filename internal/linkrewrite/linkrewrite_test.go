package linkrewrite

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// reference rewrites in one pass over the whole input, position by
// position, as the package documentation says: the base, with scheme and
// host in any case, followed by an ending byte (or the end of the input,
// when the whole input is within the bound), within the first max bytes.
func reference(in []byte, base, target string, fold int, max int) []byte {
	limit, endEnds := len(in), true
	if len(in) > max {
		limit, endEnds = max, false
	}
	var out []byte
	for i := 0; i < limit; {
		j := i + len(base)
		if j <= limit && strings.EqualFold(string(in[i:i+fold]), base[:fold]) && string(in[i+fold:j]) == base[fold:] &&
			(j < limit && strings.IndexByte(`/?#"`, in[j]) >= 0 || j == limit && endEnds) {
			out = append(out, target...)
			i = j
			continue
		}
		out = append(out, in[i])
		i++
	}
	return append(out, in[limit:]...)
}

// rewrite runs a Rewriter over in, written in the pieces that cuts gives
// (each byte of cuts is the length of the next write, 0 meaning an empty
// write), and returns its output.
func rewrite(t testing.TB, b *Base, target string, max int64, in, cuts []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	var z Rewriter
	z.Reset(&out, b, target, max)
	rest := in
	for _, c := range cuts {
		n := min(int(c), len(rest))
		if _, err := z.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if _, err := z.Write(rest); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func mustBase(t testing.TB, raw string) *Base {
	t.Helper()
	b, err := ParseBase(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const target = "http://localhost:9080"

func TestRewrite(t *testing.T) {
	b := mustBase(t, "https://APIM.example.com:9443")
	for _, tc := range []struct{ in, want string }{
		{`{"url":"https://apim.example.com:9443/api/orgs/1"}`, `{"url":"http://localhost:9080/api/orgs/1"}`},
		{`{"url":"HTTPS://Apim.Example.COM:9443/api/orgs/1"}`, `{"url":"http://localhost:9080/api/orgs/1"}`},
		{`"https://apim.example.com:9443"`, `"http://localhost:9080"`},
		{`https://apim.example.com:9443?x=1 https://apim.example.com:9443#f`, `http://localhost:9080?x=1 http://localhost:9080#f`},
		{`https://apim.example.com:9443`, `http://localhost:9080`}, // the end of the input ends it
		// Not the upstream's origin: left alone.
		{`"https://apim.example.com:9444/api"`, `"https://apim.example.com:9444/api"`},
		{`"https://apim.example.com:94430/api"`, `"https://apim.example.com:94430/api"`},
		{`"https://apim.example.com/api"`, `"https://apim.example.com/api"`},
		{`"https://apim.example.com:9443.evil.com/api"`, `"https://apim.example.com:9443.evil.com/api"`},
		{`"https://apim.example.com:9443@evil.com/api"`, `"https://apim.example.com:9443@evil.com/api"`},
		{`"https://apim.example.com:9443\\@evil.com"`, `"https://apim.example.com:9443\\@evil.com"`},
		{`"http://apim.example.com:9443/api"`, `"http://apim.example.com:9443/api"`},
		{`"https://user@apim.example.com:9443/api"`, `"https://user@apim.example.com:9443/api"`},
		// Overlaps and near misses.
		{`hhttps://apim.example.com:9443/x`, `hhttp://localhost:9080/x`},
		{`https://apim.example.com:944https://apim.example.com:9443/`, `https://apim.example.com:944http://localhost:9080/`},
		{`https://apim.example.com:9443https://apim.example.com:9443/`, `https://apim.example.com:9443http://localhost:9080/`},
	} {
		for _, cut := range []int{1, 2, 3, 7, 1000} {
			var cuts []byte
			for range len(tc.in) / cut {
				cuts = append(cuts, byte(cut))
			}
			if got := string(rewrite(t, b, target, 1<<20, []byte(tc.in), cuts)); got != tc.want {
				t.Errorf("writes of %d bytes: %s\n got %s\nwant %s", cut, tc.in, got, tc.want)
			}
		}
	}
}

func TestRewritePrefix(t *testing.T) {
	b := mustBase(t, "https://cp4i.example.com/integration/apis/ns/inst/")
	for in, want := range map[string]string{
		`"https://cp4i.example.com/integration/apis/ns/inst/api/orgs"`:    `"http://localhost:9080/api/orgs"`,
		`"https://CP4I.example.com/integration/apis/ns/inst"`:             `"http://localhost:9080"`,
		`"https://cp4i.example.com/integration/apis/ns/instance/api"`:     `"https://cp4i.example.com/integration/apis/ns/instance/api"`,
		`"https://cp4i.example.com/integration/apis/ns/INST/api"`:         `"https://cp4i.example.com/integration/apis/ns/INST/api"`,
		`"https://cp4i.example.com/integration/apis/other/inst/api/orgs"`: `"https://cp4i.example.com/integration/apis/other/inst/api/orgs"`,
	} {
		if got := string(rewrite(t, b, target, 1<<20, []byte(in), nil)); got != want {
			t.Errorf("%s\n got %s\nwant %s", in, got, want)
		}
	}
}

// TestRewriteSelfOverlap: a failed match whose bytes hold the start of
// another, with a base whose own bytes repeat.
func TestRewriteSelfOverlap(t *testing.T) {
	b := mustBase(t, "http://hhh")
	for in, want := range map[string]string{
		"http://hhtp://hhh/":      "http://hhtp://hhh/",
		"http://hhhttp://hhh/":    "http://hhhttp://localhost:9080/",
		"http://hhttp://hhh?":     "http://hhttp://localhost:9080?",
		"hhttp://hhhh http://hhh": "hhttp://hhhh " + target,
	} {
		for _, cuts := range [][]byte{nil, bytes.Repeat([]byte{1}, len(in))} {
			if got := string(rewrite(t, b, target, 1<<20, []byte(in), cuts)); got != want {
				t.Errorf("%s (writes %v)\n got %s\nwant %s", in, cuts, got, want)
			}
		}
	}
}

func TestRewriteBound(t *testing.T) {
	b := mustBase(t, "https://apim.example.com")
	url := `"https://apim.example.com/api"`
	in := []byte(strings.Repeat(url, 4))
	// The bound cuts the third URL: it and the fourth pass unchanged.
	got := rewrite(t, b, target, int64(2*len(url)+10), in, []byte{5, 40, 3})
	want := strings.Repeat(`"http://localhost:9080/api"`, 2) + strings.Repeat(url, 2)
	if string(got) != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestParseBaseAndTarget(t *testing.T) {
	for _, bad := range []string{"apim.example.com", "ftp://apim.example.com", "https://", "https://u:p@apim.example.com", "https://apim.example.com?x=1", "https://apim.example.com#f"} {
		if _, err := ParseBase(bad); err == nil {
			t.Errorf("ParseBase(%q) succeeded", bad)
		}
	}
	for _, bad := range [][2]string{{"http", `evil.com"`}, {"http", `a\b`}, {"http", "a b"}, {"http", "a/b"}, {"http", "u@h"}, {"http", ""}, {"ftp", "h"}} {
		if _, err := Target(bad[0], bad[1]); err == nil {
			t.Errorf("Target(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	if got, err := Target("https", "[::1]:9443"); err != nil || got != "https://[::1]:9443" {
		t.Errorf("Target = %q, %v", got, err)
	}
}

func TestIsJSON(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/problem+json": true, "application/vnd.ibm.apiconnect+json;v=2": true,
		"text/plain": false, "application/jsonx": false, "+json": false, "": false, "text/html; x=+json": false,
	} {
		if got := IsJSON(ct); got != want {
			t.Errorf("IsJSON(%q) = %v", ct, got)
		}
	}
}

func TestResponseWriter(t *testing.T) {
	b := mustBase(t, "https://apim.example.com")
	body := `{"url":"https://apim.example.com/api/orgs/1","other":"https://apim.example.com:8443/x"}`
	for _, tc := range []struct {
		name        string
		contentType string
		encoding    string
		wantBody    string
		wantLength  bool
		wantSkipped bool
	}{
		{"json", "application/json; charset=utf-8", "", `{"url":"http://localhost:9080/api/orgs/1","other":"https://apim.example.com:8443/x"}`, false, false},
		{"not json", "text/plain", "", body, true, false},
		{"gzip", "application/json", "gzip", body, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rw := NewResponseWriter(rec, b, target, 1<<20)
			h := rw.Header()
			h.Set("Content-Type", tc.contentType)
			h.Set("Content-Length", "87")
			h.Set("Location", "https://apim.example.com/api/orgs/1")
			h.Set("Content-Location", "https://apim.example.com:8443/api/orgs/1")
			if tc.encoding != "" {
				h.Set("Content-Encoding", tc.encoding)
			}
			rw.WriteHeader(http.StatusCreated)
			_, _ = rw.Write([]byte(body[:30]))
			_, _ = rw.Write([]byte(body[30:]))
			skipped := rw.Skipped()
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusCreated || rec.Body.String() != tc.wantBody {
				t.Errorf("status %d, body %s", rec.Code, rec.Body)
			}
			if got := rec.Header().Get("Location"); got != "http://localhost:9080/api/orgs/1" {
				t.Errorf("Location %q", got)
			}
			if got := rec.Header().Get("Content-Location"); got != "https://apim.example.com:8443/api/orgs/1" {
				t.Errorf("Content-Location %q, want it untouched (another port)", got)
			}
			if got := rec.Header().Get("Content-Length") != ""; got != tc.wantLength {
				t.Errorf("Content-Length kept: %v", got)
			}
			if (skipped != "") != tc.wantSkipped {
				t.Errorf("skipped %q", skipped)
			}
		})
	}
}

// fuzzBases are the bases FuzzRewrite rewrites: a plain one, and ones
// whose own bytes could start another match.
var fuzzBases = []string{"https://apim.example.com:9443/p", "http://h.http.hh/http", "http://hhh"}

// FuzzRewrite checks the Rewriter against the reference for any input,
// any split of it into writes, any bound, and each of fuzzBases; and that
// whatever a body holds, every rewritten link names the target's origin.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{
		`{"total_results":2,"results":[{"url":"https://apim.example.com:9443/p/api/orgs/1"},{"url":"HTTPS://APIM.EXAMPLE.COM:9443/p"}]}`,
		`https://apim.example.com:9443/phttps://apim.example.com:9443/p/`,
		`https://apim.example.com:9443/p?https://apim.example.com:9443/p#"https://apim.example.com:9443/p`,
		`https://apim.example.com:944/p https://apim.example.com:9443/pp https://apim.example.com:9443.e/p`,
		`hhhttps://apim.example.com:9443/p/`,
		`http://h.http.http://h.http.hh/http/ http://h.http.hh/htt http://hhhh http://hhh/`,
		`http://hhtp://hhh/ http://hhhttp://hhh/`,
	} {
		for i := range fuzzBases {
			f.Add([]byte(s), []byte{3, 17, 0, 1, 5}, uint16(1000), uint8(i))
			f.Add([]byte(s), bytes.Repeat([]byte{1}, 30), uint16(40), uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, in, cuts []byte, max uint16, which uint8) {
		base := fuzzBases[int(which)%len(fuzzBases)]
		b := mustBase(t, base)
		got := rewrite(t, b, target, int64(max), in, cuts)
		want := reference(in, base, target, b.fold, int(max))
		if !bytes.Equal(got, want) {
			t.Fatalf("base %s, input %q, writes %v, bound %d:\n got %q\nwant %q", base, in, cuts, max, got, want)
		}
		// Every target in the output is followed by an ending byte or the
		// end: a rewritten link has the target's origin, and only it.
		for rest := got; !bytes.Contains(in, []byte(target)); {
			i := bytes.Index(rest, []byte(target))
			if i < 0 {
				break
			}
			rest = rest[i+len(target):]
			if len(rest) > 0 && !ends(rest[0]) {
				t.Fatalf("a rewritten link continues with %q: %q", rest[0], got)
			}
		}
	})
}
