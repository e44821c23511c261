package apic_test

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

func TestParseRetryAfter(t *testing.T) {
	now := t0
	date := time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC)
	cases := []struct {
		name, in string
		want     time.Time
	}{
		{"seconds", "7", now.Add(7 * time.Second)},
		{"seconds with spaces", " 120 ", now.Add(2 * time.Minute)},
		{"zero", "0", now},
		{"more than a day is capped", "999999", now.Add(24 * time.Hour)},
		{"IMF-fixdate", "Sun, 01 Mar 2026 12:05:00 GMT", date},
		{"RFC 850 date", "Sunday, 01-Mar-26 12:05:00 GMT", date},
		{"asctime date", "Sun Mar  1 12:05:00 2026", date},
		{"garbage", "soon", time.Time{}},
		{"fraction", "1.5", time.Time{}},
		{"negative", "-5", time.Time{}},
		{"empty", "", time.Time{}},
		{"blank", "   ", time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := apic.ParseRetryAfter(tc.in, now)
			if !got.Equal(tc.want) {
				t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	long := strings.Repeat("x", 300)
	cases := []struct {
		name string
		body string
		want []string
	}{
		{"API Connect shape", `{"status":401,"message":["Invalid username or password."]}`, []string{"Invalid username or password."}},
		{"messages and errors", `{"status":400,"message":["a","b"],"errors":["c"]}`, []string{"a", "b", "c"}},
		{"message as a plain string", `{"status":500,"message":"internal error"}`, []string{"internal error"}},
		{"errors only", `{"errors":["bad field"]}`, []string{"bad field"}},
		{"long message shortened", `{"message":["` + strings.Repeat("m", 600) + `"]}`, []string{strings.Repeat("m", 500) + "..."}},
		{"JSON without messages", `{"status":502}`, []string{`{"status":502}`}},
		{"non-JSON first line", "<html>\n<body>Bad Gateway</body>\n</html>", []string{"<html>"}},
		{"non-JSON line shortened", long + "\nmore", []string{strings.Repeat("x", 200) + "..."}},
		{"plain text", "  upstream connect error  ", []string{"upstream connect error"}},
		{"empty", "", nil},
		{"blank", " \n\t", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := apic.ErrorMessages([]byte(tc.body), nil)
			if !slices.Equal(got, tc.want) {
				t.Errorf("ErrorMessages(%q) = %q, want %q", shortQ(tc.body), got, tc.want)
			}
		})
	}
}

func shortQ(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func TestCheckServer(t *testing.T) {
	good := []string{
		"https://apic.example.com",
		"https://apic.example.com/",
		"http://127.0.0.1:9443",
		"https://cp4i.example.com/integration/apis/ns/instance",
		"https://host/apis",
		"https://host/api-manager",
	}
	for _, s := range good {
		if err := apic.CheckServer(s); err != nil {
			t.Errorf("CheckServer(%q) = %v, want nil", s, err)
		}
	}
	bad := []struct {
		in, want string
	}{
		{"apic.example.com", "want an http:// or https:// URL"},
		{"apic.example.com:9443", "want an http:// or https:// URL"},
		{"ftp://apic.example.com", "want an http:// or https:// URL"},
		{"https://", "want a URL with a host"},
		{"https:///path", "want a URL with a host"},
		{"https://user:s3cret-pw@apic.example.com", "must not carry credentials"},
		{"ftp://user:s3cret-pw@apic.example.com", "must not carry credentials"},
		{"https://user:s3cret-pw@apic.example.com:port", "not a URL"},
		{"https://apic.example.com?x=1", "must not have a query or fragment"},
		{"https://apic.example.com#frag", "must not have a query or fragment"},
		{"https://apic.example.com?", "must not have a query or fragment"},
		{"https://apic.example.com/#", "must not have a query or fragment"},
		{"https://apic.example.com/api", "without the trailing /api"},
		{"https://apic.example.com/api/", "without the trailing /api"},
		{"https://host/integration/apis/ns/inst/api", "without the trailing /api"},
		{"https://host/%zz", "not a URL"},
	}
	for _, tc := range bad {
		err := apic.CheckServer(tc.in)
		if err == nil {
			t.Errorf("CheckServer(%q) = nil, want an error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckServer(%q) = %q, want it to say %q", tc.in, err, tc.want)
		}
		checkErrorText(t, err.Error(), "s3cret-pw")
	}
}

func TestKindString(t *testing.T) {
	want := map[apic.Kind]string{
		apic.KindUnreachable: "unreachable",
		apic.KindTimeout:     "timeout",
		apic.KindTLS:         "tls",
		apic.KindRefused:     "refused",
		apic.KindRateLimited: "rate_limited",
		apic.KindServer:      "server_error",
		apic.KindBadResponse: "bad_response",
		apic.Kind(0):         "unknown",
		apic.Kind(99):        "unknown",
	}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), k.String(), s)
		}
	}
}

func TestErrorText(t *testing.T) {
	const url = "https://h/api/token"
	cases := []struct {
		e    apic.Error
		want string
	}{
		{apic.Error{Kind: apic.KindUnreachable, URL: url, Err: io.EOF}, "token endpoint https://h/api/token unreachable: EOF"},
		{apic.Error{Kind: apic.KindTimeout, URL: url}, "token endpoint https://h/api/token timed out"},
		{apic.Error{Kind: apic.KindTLS, URL: url, Err: errors.New("x509: bad")}, "token endpoint https://h/api/token failed TLS verification: x509: bad"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "password", Status: 401, Messages: []string{"a", "b"}},
			"token endpoint https://h/api/token refused the credentials (password grant): status 401: a; b"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "api_key", Status: 403},
			"token endpoint https://h/api/token refused the credentials (api_key grant): status 403"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "refresh_token", Status: 400, Messages: []string{"bad body"}},
			"token endpoint https://h/api/token refused the refresh_token token request: status 400: bad body"},
		{apic.Error{Kind: apic.KindRateLimited, URL: url, Status: 429}, "token endpoint https://h/api/token is rate limiting: status 429"},
		{apic.Error{Kind: apic.KindServer, URL: url, Status: 503, Messages: []string{"down"}}, "token endpoint https://h/api/token failed: status 503: down"},
		{apic.Error{Kind: apic.KindBadResponse, URL: url, Status: 200, Err: errors.New("access_token is missing or empty")},
			"token endpoint https://h/api/token answered without a usable token: access_token is missing or empty"},
		{apic.Error{URL: url}, "token request to https://h/api/token failed"},
	}
	for _, tc := range cases {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		checkErrorText(t, tc.e.Error())
		if got := errors.Unwrap(&tc.e); got != tc.e.Err {
			t.Errorf("Unwrap() = %v, want %v", got, tc.e.Err)
		}
	}
}
