package apic_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

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
	const (
		url  = "https://h/api/token"
		call = "https://h/api/me"
		pw   = apic.GrantPassword
	)
	cases := []struct {
		e    apic.Error
		want string
	}{
		// Token requests: Grant is set.
		{apic.Error{Kind: apic.KindUnreachable, Method: "POST", URL: url, Grant: pw, Err: io.EOF}, "token endpoint https://h/api/token unreachable: EOF"},
		{apic.Error{Kind: apic.KindTimeout, Method: "POST", URL: url, Grant: pw}, "token endpoint https://h/api/token timed out"},
		{apic.Error{Kind: apic.KindTLS, Method: "POST", URL: url, Grant: pw, Err: errors.New("x509: bad")}, "token endpoint https://h/api/token: the certificate of h is not trusted: x509: bad"},
		{apic.Error{Kind: apic.KindTLS, Method: "POST", URL: "https://h:9443/api/token", Grant: pw, Err: x509.UnknownAuthorityError{}, Hint: "name its CA with --ca-cert"},
			"token endpoint https://h:9443/api/token: the certificate of h:9443 is not trusted: x509: certificate signed by unknown authority; name its CA with --ca-cert"},
		{apic.Error{Kind: apic.KindTLS, Method: "POST", URL: url, Grant: pw, Err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}},
			"token endpoint https://h/api/token: h does not answer in TLS: tls: first record does not look like a TLS handshake"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "password", Status: 401, Messages: []string{"a", "b"}},
			"token endpoint https://h/api/token refused the credentials (password grant): status 401: a; b"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "api_key", Status: 403},
			"token endpoint https://h/api/token refused the credentials (api_key grant): status 403"},
		{apic.Error{Kind: apic.KindRefused, URL: url, Grant: "refresh_token", Status: 400, Messages: []string{"bad body"}},
			"token endpoint https://h/api/token refused the refresh_token token request: status 400: bad body"},
		{apic.Error{Kind: apic.KindRateLimited, URL: url, Grant: pw, Status: 429}, "token endpoint https://h/api/token is rate limiting: status 429"},
		{apic.Error{Kind: apic.KindServer, URL: url, Grant: pw, Status: 503, Messages: []string{"down"}}, "token endpoint https://h/api/token failed: status 503: down"},
		{apic.Error{Kind: apic.KindBadResponse, URL: url, Grant: pw, Status: 200, Err: errors.New("access_token is missing or empty")},
			"token endpoint https://h/api/token answered without a usable token: access_token is missing or empty"},
		{apic.Error{Kind: apic.KindBadResponse, URL: url, Grant: pw, Status: 302}, "token endpoint https://h/api/token answered status 302 without a token"},
		{apic.Error{URL: url, Grant: pw}, "token request to https://h/api/token failed"},
		// Other calls: no Grant; the method and URL come first.
		{apic.Error{Kind: apic.KindUnreachable, Method: "GET", URL: call, Err: io.EOF}, "GET https://h/api/me: unreachable: EOF"},
		{apic.Error{Kind: apic.KindTimeout, Method: "GET", URL: call}, "GET https://h/api/me: timed out"},
		{apic.Error{Kind: apic.KindTLS, Method: "GET", URL: call, Err: errors.New("x509: bad"), Hint: "fix it"}, "GET https://h/api/me: the certificate of h is not trusted: x509: bad; fix it"},
		{apic.Error{Kind: apic.KindRefused, Method: "GET", URL: call, Status: 401, Messages: []string{"Invalid token."}}, "GET https://h/api/me: status 401: Invalid token."},
		{apic.Error{Kind: apic.KindRateLimited, Method: "GET", URL: call, Status: 429}, "GET https://h/api/me: status 429"},
		{apic.Error{Kind: apic.KindServer, Method: "POST", URL: call, Status: 502, Messages: []string{"a", "b"}}, "POST https://h/api/me: status 502: a; b"},
		{apic.Error{Kind: apic.KindBadResponse, Method: "GET", URL: call, Status: 200, Err: errors.New("the body is not the expected JSON (empty body)")},
			"GET https://h/api/me: unusable answer (status 200): the body is not the expected JSON (empty body)"},
		{apic.Error{Method: "GET", URL: call}, "GET https://h/api/me: failed"},
	}
	for _, tc := range cases {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if tc.e.Grant != "" { // a call's text starts with its method
			checkErrorText(t, tc.e.Error())
		}
		if got := errors.Unwrap(&tc.e); got != tc.e.Err {
			t.Errorf("Unwrap() = %v, want %v", got, tc.e.Err)
		}
		if got, want := tc.e.ServerMessage(), strings.Join(tc.e.Messages, "; "); got != want {
			t.Errorf("ServerMessage() = %q, want %q", got, want)
		}
	}
}

// TestErrorKindsAlike: a token request and a platform call that get the
// same answer fail with the same kind, status and Retry-After, each
// named in its own way.
func TestErrorKindsAlike(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		retryAfter string
		body       string
		kind       apic.Kind
	}{
		{"400", 400, "", `{"status":400,"message":["Bad request."]}`, apic.KindRefused},
		{"401", 401, "", `{"status":401,"message":["Unauthorized."]}`, apic.KindRefused},
		{"403", 403, "", `{"status":403,"message":["Forbidden."]}`, apic.KindRefused},
		{"404", 404, "", "not found", apic.KindRefused},
		{"408", 408, "", "", apic.KindServer},
		{"429", 429, "9", `{"status":429,"message":["Slow down."]}`, apic.KindRateLimited},
		{"500", 500, "", `{"status":500,"message":["Broken."]}`, apic.KindServer},
		{"503 with Retry-After", 503, "30", "", apic.KindServer},
		{"302", 302, "", "", apic.KindBadResponse},
		{"200 with HTML", 200, "", "<html>login</html>", apic.KindBadResponse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == 302 {
					w.Header().Set("Location", "https://sso.example.com/login")
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer ts.Close()
			clock := newFakeClock()
			c := &apic.Client{Server: ts.URL, Credentials: developer(), Now: clock.Now}
			_, loginErr := c.Login(testCtx(t))
			_, meErr := c.Me(testCtx(t), &apic.Token{Token: oauth2.Token{AccessToken: "a-bearer-token"}})
			for _, got := range []struct {
				err           error
				grant, method string
				path, prefix  string
			}{
				{loginErr, apic.GrantPassword, "POST", "/api/token", "token endpoint " + ts.URL + "/api/token "},
				{meErr, "", "GET", "/api/me", "GET " + ts.URL + "/api/me: "},
			} {
				ae := asAPICError(t, got.err)
				if ae.Kind != tc.kind || ae.Status != tc.status || ae.Grant != got.grant || ae.Method != got.method || ae.URL != ts.URL+got.path {
					t.Errorf("%s: kind %v status %d grant %q %s %s, want %v %d %q %s %s",
						got.path, ae.Kind, ae.Status, ae.Grant, ae.Method, ae.URL, tc.kind, tc.status, got.grant, got.method, ts.URL+got.path)
				}
				if ae.Refused() != (tc.kind == apic.KindRefused) || ae.Cause() != tc.kind.String() {
					t.Errorf("%s: Refused() %v, Cause() %q", got.path, ae.Refused(), ae.Cause())
				}
				var wantRetry time.Time
				if tc.retryAfter != "" {
					wantRetry = apic.ParseRetryAfter(tc.retryAfter, clock.Now())
				}
				if !ae.RetryAfter().Equal(wantRetry) {
					t.Errorf("%s: RetryAfter() %v, want %v", got.path, ae.RetryAfter(), wantRetry)
				}
				if msg := ae.Error(); !strings.HasPrefix(msg, got.prefix) {
					t.Errorf("%s: Error() = %q, want it to start %q", got.path, msg, got.prefix)
				}
			}
		})
	}

	// No answer at all: the same kinds too.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that a closed connection ends r.Context()
		<-r.Context().Done()
	}))
	defer hang.Close()
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = quietLog
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	for _, tc := range []struct {
		name, server string
		kind         apic.Kind
	}{
		{"closed", closed.URL, apic.KindUnreachable},
		{"hang", hang.URL, apic.KindTimeout},
		{"untrusted certificate", tlsSrv.URL, apic.KindTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &apic.Client{Server: tc.server, Credentials: developer()}
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			_, loginErr := c.Login(ctx)
			_, meErr := c.Me(ctx, &apic.Token{Token: oauth2.Token{AccessToken: "a-bearer-token"}})
			for _, err := range []error{loginErr, meErr} {
				if ae := asAPICError(t, err); ae.Kind != tc.kind || ae.Status != 0 {
					t.Errorf("kind %v status %d (%v), want %v and no status", ae.Kind, ae.Status, err, tc.kind)
				}
				if strings.Contains(err.Error(), `Post "`) || strings.Contains(err.Error(), `Get "`) {
					t.Errorf("Error() = %q repeats the method and URL", err)
				}
			}
		})
	}
}

func TestTransportCause(t *testing.T) {
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "http://10.1.2.3:9443/api/orgs", Err: err} }
	for _, tc := range []struct {
		err    error
		kind   apic.Kind
		phrase string
	}{
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), apic.KindUnreachable, "is unreachable: connection refused"},
		{wrap(&net.DNSError{Err: "no such host", Name: "apim.example.com", IsNotFound: true}), apic.KindUnreachable, "is unreachable: its name does not resolve"},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}), apic.KindUnreachable, "is unreachable: no route to it"},
		{wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), apic.KindUnreachable, "closed the connection before answering"},
		{wrap(&net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}), apic.KindUnreachable, "closed the connection before answering"},
		{wrap(io.ErrUnexpectedEOF), apic.KindUnreachable, "closed the connection before answering"},
		{wrap(errors.New("http: server closed idle connection")), apic.KindUnreachable, "closed the connection before answering"},
		{wrap(context.DeadlineExceeded), apic.KindTimeout, "did not answer in time"},
		{wrap(x509.UnknownAuthorityError{}), apic.KindTLS, "failed the TLS handshake"},
		{wrap(errors.New("malformed HTTP response \"\\x00\"")), apic.KindUnreachable, "could not be reached"},
	} {
		kind, phrase := apic.TransportCause(tc.err)
		if kind != tc.kind || phrase != tc.phrase {
			t.Errorf("TransportCause(%v) = %v, %q; want %v, %q", tc.err, kind, phrase, tc.kind, tc.phrase)
		}
		if strings.Contains(phrase, "10.1.2.3") {
			t.Errorf("phrase %q shows the address", phrase)
		}
	}
}

// hiddenCause hides its cause from errors.Is and errors.As, as
// reverse_proxy's DialError does.
type hiddenCause struct{ error }

func TestTransportCauseHidden(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if _, phrase := apic.TransportCause(hiddenCause{refused}); phrase != "is unreachable: connection refused" {
		t.Errorf("phrase %q", phrase)
	}
	dns := &net.DNSError{Err: "no such host", Name: "apim.example.com", IsNotFound: true}
	if _, phrase := apic.TransportCause(hiddenCause{dns}); phrase != "is unreachable: its name does not resolve" {
		t.Errorf("phrase %q", phrase)
	}
}
