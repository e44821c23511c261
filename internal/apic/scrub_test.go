package apic_test

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

func TestScrubberForms(t *testing.T) {
	secrets := map[string]string{
		"html and quotes": `S3cr<t&P>ss"\'`,
		"non-ASCII":       "pässwörd-日本語-ünïcode",
		"long":            strings.Repeat("a1B2c3D4", 9) + "!", // 73 characters
	}
	for name, secret := range secrets {
		s := apic.NewScrubber(secret)
		goJSON, _ := json.Marshal(secret)
		var std strings.Builder
		enc := json.NewEncoder(&std)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(secret)
		forms := map[string]string{
			"raw":               secret,
			"Go JSON":           string(goJSON),
			"standard JSON":     strings.TrimSpace(std.String()),
			"Go JSON upper hex": strings.ReplaceAll(strings.ReplaceAll(string(goJSON), `\u003c`, `\u003C`), `\u003e`, `\u003E`),
			"query escaped":     url.QueryEscape(secret),
			"query lower hex":   strings.NewReplacer("%3C", "%3c", "%3E", "%3e", "%C3%A4", "%c3%a4").Replace(url.QueryEscape(secret)),
			"path escaped":      url.PathEscape(secret),
			"base64":            base64.StdEncoding.EncodeToString([]byte(secret)),
			"base64 basic auth": base64.StdEncoding.EncodeToString([]byte("client:" + secret)),
			"base64 offset 2":   base64.URLEncoding.EncodeToString([]byte("ab" + secret + "xyz")),
			"cut short":         secret[:len(secret)/2+4],
			"cut at the start":  secret[len(secret)/2-4:],
		}
		for fname, f := range forms {
			text := `{"message":["bad request: ` + f + ` was sent"]}`
			got := s.Scrub(text)
			if !strings.Contains(got, apic.Redacted) {
				t.Errorf("%s, %s: nothing redacted in %q", name, fname, got)
			}
			for _, leak := range []string{secret, string(goJSON), url.QueryEscape(secret)} {
				if len(leak) >= 8 && strings.Contains(got, leak[:8]) {
					t.Errorf("%s, %s: %q still holds a piece of the secret", name, fname, got)
				}
			}
			if !strings.HasPrefix(got, `{"message":["bad request: `) || !strings.HasSuffix(got, ` was sent"]}`) {
				t.Errorf("%s, %s: scrubbed more than the secret: %q", name, fname, got)
			}
		}
	}
}

func TestScrubberLeavesOtherTextAlone(t *testing.T) {
	s := apic.NewScrubber("Passw0rd!", "", "abc")
	for _, text := range []string{"", "Invalid username or password.", "abc is too short to scrub"} {
		if got := s.Scrub(text); got != text {
			t.Errorf("Scrub(%q) = %q", text, got)
		}
	}
	if got := s.Scrub("x Passw0rd! y Passw0rd"); got != "x [REDACTED] y [REDACTED]" {
		t.Errorf("got %q", got)
	}
	var none *apic.Scrubber
	if got := none.Scrub("Passw0rd!"); got != "Passw0rd!" {
		t.Errorf("nil scrubber changed the text: %q", got)
	}
}

func TestErrorMessagesScrubBeforeShortening(t *testing.T) {
	secret := strings.Repeat("Z", 20) + "-secret-value-" + strings.Repeat("Q", 20)
	body := `{"status":400,"message":["` + strings.Repeat("x", 480) + secret + `"]}`
	got := apic.ErrorMessages([]byte(body), apic.NewScrubber(secret))
	if len(got) != 1 || strings.Contains(got[0], "ZZZZ") {
		t.Fatalf("a piece of the secret survived the cut: %q", got)
	}
}

func TestParseTokenResponseRefusesHugeToken(t *testing.T) {
	body := `{"access_token":"` + strings.Repeat("a", apic.MaxAccessToken+1) + `","token_type":"Bearer","expires_in":3600}`
	_, err := apic.ParseTokenResponse([]byte(body), time.Now())
	if err == nil || !strings.Contains(err.Error(), "16385 bytes") {
		t.Fatalf("err = %v, want the size named", err)
	}
	ok := `{"access_token":"` + strings.Repeat("a", apic.MaxAccessToken) + `","token_type":"Bearer","expires_in":3600}`
	if _, err := apic.ParseTokenResponse([]byte(ok), time.Now()); err != nil {
		t.Fatalf("a token of exactly the limit: %v", err)
	}
}
