package apic

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestLoginHint(t *testing.T) {
	s := HintSettings{Server: "--to", CACert: "--ca-cert", Timeout: "--timeout"}
	const server = "https://apim.example.com"
	for _, tc := range []struct {
		err    error
		apiKey bool
		want   string
	}{
		{&Error{Kind: KindTLS}, false, "--ca-cert <pem file>"},
		{&Error{Kind: KindUnreachable}, false, "check --to (https://apim.example.com)"},
		{&Error{Kind: KindTimeout}, false, "raise --timeout"},
		{&Error{Kind: KindRefused, Status: 401, Messages: []string{"Invalid realm provider/x for this user."}}, false, "apic-realms --server https://apim.example.com"},
		{&Error{Kind: KindRefused, Status: 401, Messages: []string{"Wrong credentials"}}, false, "the password and the client id and secret"},
		{&Error{Kind: KindRefused, Status: 401}, true, "the API key and the client id and secret"},
		{&Error{Kind: KindRefused, Status: 400}, false, "the credentials and the realm"},
		{&Error{Kind: KindRefused, Status: 400, Hint: "name in scope only scopes the client registration has"}, false, ""},
		{fmt.Errorf("wrapped: %w", &Error{Kind: KindTLS}), false, "--ca-cert"},
		{&Error{Kind: KindServer, Status: 503}, false, ""},
		{errors.New("not an apic.Error"), false, ""},
	} {
		s.APIKey = tc.apiKey
		got := LoginHint(tc.err, server, s)
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("LoginHint(%v) = %q, want it to hold %q", tc.err, got, tc.want)
		}
	}
}
