package apic_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

func TestParseTokenResponse(t *testing.T) {
	now := t0
	in2h := now.Add(2 * time.Hour)
	jwt2h := makeJWT(t, map[string]any{"exp": in2h.Unix(), "iat": now.Unix()})
	jwtPast := makeJWT(t, map[string]any{"exp": now.Add(-time.Minute).Unix()})
	jwtFar := makeJWT(t, map[string]any{"exp": now.Add(91 * 24 * time.Hour).Unix()})
	jwtNoExp := makeJWT(t, map[string]any{"iat": now.Unix()})
	const day90 = 90 * 24 * 3600

	type want struct {
		expiry        time.Time // zero: an error is wanted
		refreshExpiry time.Time
		err           string // a substring of the error
	}
	cases := []struct {
		name   string
		fields map[string]any // marshalled, unless raw is set
		raw    string
		want   want
	}{
		{"access_token with a line break", map[string]any{"access_token": "abc\r\nX-Injected: 1", "expires_in": 60},
			"", want{err: "characters a header cannot carry"}},
		{"expires_in number", map[string]any{"access_token": "opaque", "token_type": "Bearer", "expires_in": 28800},
			"", want{expiry: now.Add(28800 * time.Second)}},
		{"expires_in numeric string", map[string]any{"access_token": "opaque", "token_type": "Bearer", "expires_in": "3600"},
			"", want{expiry: now.Add(time.Hour)}},
		{"expires_in fraction", map[string]any{"access_token": "opaque", "expires_in": 1.5},
			"", want{expiry: now.Add(1500 * time.Millisecond)}},
		{"expires_in exactly 90 days", map[string]any{"access_token": "opaque", "expires_in": day90},
			"", want{expiry: now.Add(day90 * time.Second)}},
		{"expires_in wins over exp", map[string]any{"access_token": jwt2h, "expires_in": 60},
			"", want{expiry: now.Add(time.Minute)}},
		{"token_type lowercase", map[string]any{"access_token": "opaque", "token_type": "bearer", "expires_in": 60},
			"", want{expiry: now.Add(time.Minute)}},
		{"token_type missing", map[string]any{"access_token": "opaque", "expires_in": 60},
			"", want{expiry: now.Add(time.Minute)}},

		{"expires_in missing, JWT exp", map[string]any{"access_token": jwt2h, "token_type": "Bearer"},
			"", want{expiry: in2h}},
		{"expires_in null, JWT exp", nil, `{"access_token":"` + jwt2h + `","expires_in":null}`, want{expiry: in2h}},
		{"expires_in missing, no JWT", map[string]any{"access_token": "opaque"},
			"", want{err: "no sane lifetime: expires_in is missing, and the token's exp claim: the access token is not a JWT"}},
		{"expires_in missing, JWT without exp", map[string]any{"access_token": jwtNoExp},
			"", want{err: "the access token has no exp claim"}},
		{"expires_in missing, JWT exp in the past", map[string]any{"access_token": jwtPast},
			"", want{err: "the token's exp claim is -1m0s from now"}},
		{"expires_in missing, JWT exp past 90 days", map[string]any{"access_token": jwtFar},
			"", want{err: "the token's exp claim is 2184h0m0s from now"}},

		{"expires_in zero, JWT exp", map[string]any{"access_token": jwt2h, "expires_in": 0}, "", want{expiry: in2h}},
		{"expires_in zero, no JWT", map[string]any{"access_token": "opaque", "expires_in": 0},
			"", want{err: "expires_in is 0, want a positive number of seconds"}},
		{"expires_in negative, JWT exp", map[string]any{"access_token": jwt2h, "expires_in": -5}, "", want{expiry: in2h}},
		{"expires_in negative, no JWT", map[string]any{"access_token": "opaque", "expires_in": -5},
			"", want{err: "expires_in is -5, want a positive number of seconds"}},
		{"expires_in absurd, JWT exp", map[string]any{"access_token": jwt2h, "expires_in": day90 + 1}, "", want{expiry: in2h}},
		{"expires_in absurd, no JWT", map[string]any{"access_token": "opaque", "expires_in": 1e12},
			"", want{err: "more than 90 days"}},
		{"expires_in absurd string, JWT past", map[string]any{"access_token": jwtPast, "expires_in": "99999999999"},
			"", want{err: "more than 90 days"}},
		{"expires_in under a second, no JWT", map[string]any{"access_token": "opaque", "expires_in": 0.5},
			"", want{err: "less than a second"}},
		{"expires_in not a number, JWT exp", map[string]any{"access_token": jwt2h, "expires_in": "soon"}, "", want{expiry: in2h}},
		{"expires_in not a number, no JWT", map[string]any{"access_token": "opaque", "expires_in": true},
			"", want{err: "expires_in is not a number"}},
		{"expires_in NaN", map[string]any{"access_token": "opaque", "expires_in": "NaN"},
			"", want{err: "expires_in is not a number"}},
		{"expires_in Inf", map[string]any{"access_token": "opaque", "expires_in": "+Inf"},
			"", want{err: "expires_in is not a number"}},

		{"token_type mac", map[string]any{"access_token": "opaque", "token_type": "mac", "expires_in": 60},
			"", want{err: `token_type is "mac", want Bearer`}},
		{"access_token empty", map[string]any{"access_token": "", "token_type": "Bearer", "expires_in": 60},
			"", want{err: "access_token is missing or empty"}},
		{"access_token missing", map[string]any{"token_type": "Bearer", "expires_in": 60},
			"", want{err: "access_token is missing or empty"}},
		{"JSON null", nil, "null", want{err: "access_token is missing or empty"}},
		{"access_token not a string", nil, `{"access_token":42,"expires_in":60}`, want{err: "not a JSON token response"}},
		{"HTML", nil, "<html><body>Login</body></html>", want{err: "not a JSON token response (looks like HTML or XML)"}},
		{"text", nil, "Service Unavailable, try later", want{err: `not a JSON token response (30 bytes starting "Service Unavailable,...")`}},
		{"empty body", nil, "", want{err: "not a JSON token response (empty body)"}},
		{"JSON array", nil, `[{"access_token":"x"}]`, want{err: "not a JSON token response"}},

		{"refresh_expires_in recorded", map[string]any{"access_token": "opaque", "expires_in": 28800, "refresh_token": "rt", "refresh_expires_in": 57600},
			"", want{expiry: now.Add(28800 * time.Second), refreshExpiry: now.Add(57600 * time.Second)}},
		{"refresh_expires_in string", map[string]any{"access_token": "opaque", "expires_in": 28800, "refresh_token": "rt", "refresh_expires_in": "60"},
			"", want{expiry: now.Add(28800 * time.Second), refreshExpiry: now.Add(time.Minute)}},
		{"refresh token without refresh_expires_in", map[string]any{"access_token": "opaque", "expires_in": 28800, "refresh_token": "rt"},
			"", want{expiry: now.Add(28800 * time.Second)}},
		{"refresh_expires_in absurd", map[string]any{"access_token": "opaque", "expires_in": 28800, "refresh_token": "rt", "refresh_expires_in": -1},
			"", want{expiry: now.Add(28800 * time.Second)}},
		{"refresh_expires_in without refresh token", map[string]any{"access_token": "opaque", "expires_in": 28800, "refresh_expires_in": 57600},
			"", want{expiry: now.Add(28800 * time.Second)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.raw)
			if tc.fields != nil {
				body = tokenBody(t, tc.fields)
			}
			tok, err := apic.ParseTokenResponse(body, now)
			if tc.want.err != "" {
				if err == nil {
					t.Fatalf("got a token expiring %v, want an error with %q", tok.Expiry, tc.want.err)
				}
				if !strings.Contains(err.Error(), tc.want.err) {
					t.Errorf("error %q, want it to contain %q", err, tc.want.err)
				}
				checkErrorText(t, err.Error())
				return
			}
			if err != nil {
				t.Fatalf("ParseTokenResponse: %v", err)
			}
			if !tok.Expiry.Equal(tc.want.expiry) {
				t.Errorf("Expiry = %v, want %v", tok.Expiry, tc.want.expiry)
			}
			if want := int64(tc.want.expiry.Sub(now) / time.Second); tok.ExpiresIn != want {
				t.Errorf("ExpiresIn = %d, want %d", tok.ExpiresIn, want)
			}
			if tok.TokenType != "Bearer" {
				t.Errorf("TokenType = %q, want Bearer", tok.TokenType)
			}
			if want, _ := tc.fields["access_token"].(string); tc.fields != nil && tok.AccessToken != want {
				t.Errorf("AccessToken = %q, want %q", tok.AccessToken, want)
			}
			if want, _ := tc.fields["refresh_token"].(string); tok.RefreshToken != want {
				t.Errorf("RefreshToken = %q, want %q", tok.RefreshToken, want)
			}
			if got := tok.RefreshExpiry; !got.Equal(tc.want.refreshExpiry) {
				t.Errorf("RefreshExpiry = %v, want %v", got, tc.want.refreshExpiry)
			}
		})
	}
}

func TestParseTokenResponseOfSimulator(t *testing.T) {
	for _, refresh := range []bool{false, true} {
		tok, err := apic.ParseTokenResponse(simTokenBody(t, refresh), t0)
		if err != nil {
			t.Fatalf("refresh tokens %v: %v", refresh, err)
		}
		if !tok.Expiry.Equal(t0.Add(28800 * time.Second)) {
			t.Errorf("Expiry = %v", tok.Expiry)
		}
		if got, want := tok.RefreshExpiry, t0.Add(57600*time.Second); refresh != !got.IsZero() || (refresh && !got.Equal(want)) {
			t.Errorf("refresh tokens %v: RefreshExpiry = %v", refresh, got)
		}
	}
}

// TestJWTClaims: JWTExpiry and TokenRealm read the same decoded claims,
// each claim on its own, so that an odd claim spoils only its reader.
func TestJWTClaims(t *testing.T) {
	cases := []struct {
		name  string
		token string
		exp   time.Time // zero: an error
		realm string
	}{
		{"both", makeJWT(t, map[string]any{"exp": 1772366400, "realm": "provider/default-idp-2"}), time.Unix(1772366400, 0), "provider/default-idp-2"},
		{"admin realm", makeJWT(t, map[string]any{"exp": 1772366400, "realm": "admin/default-idp-1"}), time.Unix(1772366400, 0), "admin/default-idp-1"},
		{"realm not a string", jwtWithPayload(`{"exp":1772366400,"realm":["provider/x"]}`), time.Unix(1772366400, 0), ""},
		{"exp not a number", jwtWithPayload(`{"exp":"soon","realm":"provider/x"}`), time.Time{}, "provider/x"},
		{"no realm", jwtWithPayload(`{"exp":1772366400}`), time.Unix(1772366400, 0), ""},
		{"realm null", jwtWithPayload(`{"exp":1772366400,"realm":null}`), time.Unix(1772366400, 0), ""},
		{"not a JWT", "opaque", time.Time{}, ""},
		{"payload not base64url", "a.!!!.c", time.Time{}, ""},
		{"payload an array", jwtWithPayload(`[{"realm":"provider/x"}]`), time.Time{}, ""},
		{"empty", "", time.Time{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exp, err := apic.JWTExpiry(tc.token)
			if tc.exp.IsZero() != (err != nil) || !exp.Equal(tc.exp) {
				t.Errorf("JWTExpiry = %v, %v; want %v", exp, err, tc.exp)
			}
			if got := apic.TokenRealm(tc.token); got != tc.realm {
				t.Errorf("TokenRealm = %q, want %q", got, tc.realm)
			}
		})
	}
}

func TestJWTExpiry(t *testing.T) {
	valid := makeJWT(t, map[string]any{"exp": 1772366400, "iat": 1772337600, "sub": "x"})
	cases := []struct {
		name  string
		token string
		want  time.Time // zero: an error is wanted
		err   string
	}{
		{"valid", valid, time.Unix(1772366400, 0), ""},
		{"valid with padding", strings.Replace(valid, ".", "==.", 1), time.Unix(1772366400, 0), ""},
		{"exp as float", jwtWithPayload(`{"exp":1772366400.5}`), time.Unix(1772366400, 5e8), ""},
		{"exp in exponent form", jwtWithPayload(`{"exp":1.7723664e9}`), time.Unix(1772366400, 0), ""},
		{"exp as a numeric string", jwtWithPayload(`{"exp":"1772366400"}`), time.Unix(1772366400, 0), ""},
		{"payload padded", strings.Split(valid, ".")[0] + "." + strings.Split(valid, ".")[1] + "==.sig", time.Unix(1772366400, 0), ""},
		{"empty", "", time.Time{}, "not a JWT"},
		{"one part", "opaque-token", time.Time{}, "not a JWT"},
		{"two parts", "a.b", time.Time{}, "not a JWT"},
		{"four parts", valid + ".x", time.Time{}, "not a JWT"},
		{"bad base64", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", time.Time{}, "not base64url"},
		{"standard base64 alphabet", "h." + "eyJleHAiOjE3NzIzNjY0MDB9+/" + ".s", time.Time{}, "not base64url"},
		{"payload not JSON", "h." + "bm90IGpzb24" + ".s", time.Time{}, "not a JSON object"},
		{"payload an array", jwtWithPayload(`[1,2]`), time.Time{}, "not a JSON object"},
		{"no exp", jwtWithPayload(`{"iat":1772337600}`), time.Time{}, "no exp claim"},
		{"exp null", jwtWithPayload(`{"exp":null}`), time.Time{}, "no exp claim"},
		{"exp not a number", jwtWithPayload(`{"exp":"tomorrow"}`), time.Time{}, "exp claim is not a number"},
		{"exp an object", jwtWithPayload(`{"exp":{"at":1}}`), time.Time{}, "exp claim is not a number"},
		{"payload null", jwtWithPayload(`null`), time.Time{}, "no exp claim"},
		{"exp zero", jwtWithPayload(`{"exp":0}`), time.Time{}, "not a sane time"},
		{"exp negative", jwtWithPayload(`{"exp":-1772366400}`), time.Time{}, "not a sane time"},
		{"exp huge", jwtWithPayload(`{"exp":1e12}`), time.Time{}, "not a sane time"},
		{"exp beyond float64", jwtWithPayload(`{"exp":1e400}`), time.Time{}, "not a sane time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := apic.JWTExpiry(tc.token)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("JWTExpiry = %v, %v; want an error with %q", got, err, tc.err)
				}
				if !got.IsZero() {
					t.Errorf("time %v with the error, want zero", got)
				}
				checkErrorText(t, err.Error())
				return
			}
			if err != nil {
				t.Fatalf("JWTExpiry: %v", err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("JWTExpiry = %v, want %v", got, tc.want)
			}
		})
	}
}

// checkAccepted checks what every accepted token response must satisfy.
func checkAccepted(t *testing.T, body []byte, now time.Time) {
	tok, err := apic.ParseTokenResponse(body, now)
	if err != nil {
		if tok != nil {
			t.Fatalf("a token with the error %v", err)
		}
		return
	}
	if tok.AccessToken == "" {
		t.Fatal("accepted an empty access token")
	}
	if tok.TokenType != "Bearer" {
		t.Fatalf("TokenType %q", tok.TokenType)
	}
	if tok.Expiry.Before(now.Add(apic.MinLifetime)) || tok.Expiry.After(now.Add(apic.MaxLifetime)) {
		t.Fatalf("Expiry %v is %v from now, outside [1s, 90 days]", tok.Expiry, tok.Expiry.Sub(now))
	}
	if re := tok.RefreshExpiry; !re.IsZero() && (re.Before(now.Add(apic.MinLifetime)) || re.After(now.Add(apic.MaxLifetime))) {
		t.Fatalf("RefreshExpiry %v is %v from now", re, re.Sub(now))
	}
}

func FuzzParseTokenResponse(f *testing.F) {
	now := t0
	f.Add(simTokenBody(f, false))
	f.Add(simTokenBody(f, true))
	jwt := makeJWT(f, map[string]any{"exp": now.Add(time.Hour).Unix()})
	for _, s := range []string{
		`{"access_token":"abc","token_type":"Bearer","expires_in":28800}`,
		`{"access_token":"abc","token_type":"bearer","expires_in":"28800"}`,
		`{"access_token":"abc","expires_in":28800,"refresh_token":"r","refresh_expires_in":57600}`,
		`{"access_token":"` + jwt + `"}`,
		`{"access_token":"` + jwt + `","expires_in":0}`,
		`{"access_token":"` + jwt + `","expires_in":-1}`,
		`{"access_token":"` + jwt + `","expires_in":1e300}`,
		`{"access_token":"` + jwtWithPayload(`{"exp":1e400}`) + `"}`,
		`{"access_token":"` + jwtWithPayload(`{"exp":1772337600.999999999}`) + `"}`,
		`{"access_token":"abc","expires_in":0.999}`,
		`{"access_token":"abc","expires_in":"0x1p4"}`,
		`{"access_token":"abc","token_type":"mac","expires_in":60}`,
		`{"access_token":"","expires_in":60}`,
		`{"status":401,"message":["Invalid username or password."]}`,
		`<html>`, ``, `null`, `[]`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAccepted(t, body, now)
	})
}

func FuzzJWTExpiry(f *testing.F) {
	now := t0
	sim := map[string]any{}
	if err := json.Unmarshal(simTokenBody(f, false), &sim); err != nil {
		f.Fatal(err)
	}
	f.Add(sim["access_token"].(string))
	f.Add(makeJWT(f, map[string]any{"exp": now.Add(time.Hour).Unix()}))
	f.Add(jwtWithPayload(`{"exp":1772337600.5}`))
	f.Add(jwtWithPayload(`{"exp":"1772337600"}`))
	f.Add(jwtWithPayload(`{"exp":-1}`))
	f.Add(jwtWithPayload(`{"exp":1e11}`))
	f.Add(jwtWithPayload(`{"exp":0.5}`))
	f.Add(jwtWithPayload(`{"exp":null}`))
	f.Add(jwtWithPayload(`{}`))
	f.Add(jwtWithPayload(`[]`))
	f.Add("a.b.c")
	f.Add("a.b")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		exp, err := apic.JWTExpiry(token)
		if err == nil {
			if !exp.After(time.Unix(0, 0)) || exp.After(time.Unix(1e11, 0)) {
				t.Fatalf("accepted exp %v", exp)
			}
		} else if !exp.IsZero() {
			t.Fatalf("time %v with the error %v", exp, err)
		}
		// The same token in a response without expires_in.
		body, merr := json.Marshal(map[string]string{"access_token": token})
		if merr != nil {
			t.Fatal(merr)
		}
		checkAccepted(t, body, now)
		tok, perr := apic.ParseTokenResponse(body, now)
		if perr == nil && tok.AccessToken == token {
			if err != nil {
				t.Fatalf("a token accepted without expires_in whose exp is unreadable: %v", err)
			}
			if !tok.Expiry.Equal(exp) {
				t.Fatalf("Expiry %v, want the exp claim %v", tok.Expiry, exp)
			}
		}
	})
}
