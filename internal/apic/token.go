package apic

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Bounds of a sane token lifetime. API Connect's default is 28800 s.
const (
	MinLifetime = time.Second
	MaxLifetime = 90 * 24 * time.Hour
)

// MaxAccessToken is the largest access token accepted: API Connect's are
// about 2.7 KB, and a much larger one would make every request fail
// upstream (431) instead of the login failing.
const MaxAccessToken = 16 << 10

// tokenResponse is the body of a successful POST /api/token.
type tokenResponse struct {
	AccessToken      string          `json:"access_token"`
	TokenType        string          `json:"token_type"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	RefreshToken     string          `json:"refresh_token"`
	RefreshExpiresIn json.RawMessage `json:"refresh_expires_in"`
}

// Token is a token the token endpoint gave.
type Token struct {
	oauth2.Token
	// RefreshExpiry is when the refresh token expires: zero when the
	// server did not say.
	RefreshExpiry time.Time
}

// ParseTokenResponse turns a token response into a Token received at now.
// The expiry comes from expires_in, or from the access token's exp claim
// when expires_in is missing or not a sane lifetime; neither giving one is
// an error.
func ParseTokenResponse(body []byte, now time.Time) (*Token, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, fmt.Errorf("the body is not a JSON token response (%s)", describeBody(body))
	}
	if tr.AccessToken == "" {
		return nil, errors.New("access_token is missing or empty")
	}
	if len(tr.AccessToken) > MaxAccessToken {
		return nil, fmt.Errorf("access_token is %d bytes, more than the %d a request header can sanely carry (API Connect's are about 2.7 KB)", len(tr.AccessToken), MaxAccessToken)
	}
	if !headerSafe(tr.AccessToken) {
		return nil, errors.New("access_token has characters a header cannot carry")
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return nil, fmt.Errorf("token_type is %q, want Bearer", shorten(tr.TokenType, 40))
	}
	lifetime, lifeErr := seconds("expires_in", tr.ExpiresIn)
	var expiry time.Time
	if lifeErr == nil {
		expiry = now.Add(lifetime)
	} else {
		exp, err := JWTExpiry(tr.AccessToken)
		if err != nil {
			return nil, fmt.Errorf("no sane lifetime: %v, and the token's exp claim: %v", lifeErr, err)
		}
		if d := exp.Sub(now); d < MinLifetime || d > MaxLifetime {
			return nil, fmt.Errorf("no sane lifetime: %v, and the token's exp claim is %s from now", lifeErr, d.Round(time.Second))
		}
		expiry = exp
	}
	tok := &Token{Token: oauth2.Token{
		AccessToken:  tr.AccessToken,
		TokenType:    "Bearer",
		RefreshToken: tr.RefreshToken,
		Expiry:       expiry,
		ExpiresIn:    int64(expiry.Sub(now) / time.Second),
	}}
	if tr.RefreshToken != "" {
		if d, err := seconds("refresh_expires_in", tr.RefreshExpiresIn); err == nil {
			tok.RefreshExpiry = now.Add(d)
		}
	}
	return tok, nil
}

// seconds reads a lifetime in seconds, as a JSON number or numeric string,
// and checks that it is sane.
func seconds(name string, raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, fmt.Errorf("%s is missing", name)
	}
	s := string(bytes.Trim(raw, `"`))
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s is not a number", name)
	}
	d := time.Duration(f * float64(time.Second))
	switch {
	case f <= 0:
		return 0, fmt.Errorf("%s is %s, want a positive number of seconds", name, s)
	case f > MaxLifetime.Seconds() || d > MaxLifetime:
		return 0, fmt.Errorf("%s is %s seconds, more than %d days", name, s, int(MaxLifetime.Hours()/24))
	case d < MinLifetime:
		return 0, fmt.Errorf("%s is %s, less than a second", name, s)
	}
	return d, nil
}

// jwtClaims decodes the claims of a JWT (its payload), each left as raw
// JSON for its reader, without checking the signature (the proxy is not
// the token's audience; the server checks it).
func jwtClaims(token string) (map[string]json.RawMessage, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("the access token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errors.New("the access token's payload is not base64url")
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("the access token's payload is not a JSON object")
	}
	return claims, nil
}

// JWTExpiry reads the exp claim of a JWT without checking its signature.
// A number or a numeric string is accepted.
func JWTExpiry(token string) (time.Time, error) {
	claims, err := jwtClaims(token)
	if err != nil {
		return time.Time{}, err
	}
	raw, ok := claims["exp"]
	if !ok || string(raw) == "null" {
		return time.Time{}, errors.New("the access token has no exp claim")
	}
	var exp json.Number
	if err := json.Unmarshal(raw, &exp); err != nil {
		return time.Time{}, errors.New("the access token's exp claim is not a number")
	}
	f, err := exp.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 1e11 {
		return time.Time{}, errors.New("the access token's exp claim is not a sane time")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

// TokenRealm reads the realm claim of an API Connect access token (a JWT),
// without checking its signature; "" when there is none.
func TokenRealm(token string) string {
	claims, err := jwtClaims(token)
	if err != nil {
		return ""
	}
	var realm string
	if json.Unmarshal(claims["realm"], &realm) != nil {
		return ""
	}
	return realm
}

// describeBody says what a body that is not JSON looks like, without
// quoting much of it.
func describeBody(body []byte) string {
	b := bytes.TrimSpace(body)
	switch {
	case len(b) == 0:
		return "empty body"
	case bytes.HasPrefix(b, []byte("<")):
		return "looks like HTML or XML"
	}
	return fmt.Sprintf("%d bytes starting %q", len(b), shorten(string(b), 20))
}

// headerSafe reports whether s can stand in an Authorization header:
// visible ASCII only, as a bearer token's token68 is.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
