package statuscmd

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                 "0s",
		999 * time.Millisecond:            "0s",
		9 * time.Second:                   "9s",
		4*time.Minute + 10*time.Second:    "4m10s",
		7*time.Hour + 42*time.Minute + 59: "7h42m",
		51*time.Hour + 30*time.Minute:     "2d3h",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestColumns(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	cases := []struct {
		id            identity
		expires, next string
	}{
		{identity{State: "no_token"}, "-", "-"},
		{identity{State: "valid", TokenExpires: in(8 * time.Hour), RefreshAt: in(6 * time.Hour)}, "8h0m", "6h0m"},
		{identity{State: "valid", TokenExpires: in(time.Hour), RefreshAt: in(-time.Second)}, "1h0m", "now"},
		{identity{State: "refreshing", TokenExpires: in(time.Hour), RefreshAt: in(-time.Minute)}, "1h0m", "now"},
		{identity{State: "cooling_down", RetryAt: in(29 * time.Second)}, "-", "29s"},
		{identity{State: "backing_off", TokenExpires: in(90 * time.Second), RetryAt: in(2 * time.Second)}, "1m30s", "2s"},
		{identity{State: "expired", TokenExpires: in(-time.Minute), RefreshAt: in(-time.Hour)}, "expired", "-"},
	}
	for _, c := range cases {
		if got := expiresIn(c.id.TokenExpires, now); got != c.expires {
			t.Errorf("%s: EXPIRES-IN %q, want %q", c.id.State, got, c.expires)
		}
		if got := nextRefresh(c.id, now); got != c.next {
			t.Errorf("%s: NEXT-REFRESH %q, want %q", c.id.State, got, c.next)
		}
	}
}

func TestShortError(t *testing.T) {
	if got := shortError(""); got != "-" {
		t.Errorf("no error: %q", got)
	}
	if got := shortError("token endpoint https://apim.example.com/api/token unreachable:\n  connection refused"); got != "unreachable: connection refused" {
		t.Errorf("short error: %q", got)
	}
	long := "token endpoint https://apim.example.com/api/token refused the credentials (password grant): status 401: Invalid username or password. And then some more words from a chatty identity provider."
	got := shortError(long)
	if n := utf8.RuneCountInString(got); n != errorWidth {
		t.Errorf("long error is %d characters, want %d: %q", n, errorWidth, got)
	}
	if !strings.HasPrefix(got, "refused the credentials") || !strings.HasSuffix(got, "chatty identity provider.") || !strings.Contains(got, "…") {
		t.Errorf("long error shortened to %q", got)
	}
}
