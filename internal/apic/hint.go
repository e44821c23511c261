package apic

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// HintSettings name, in the words of the caller's configuration, the
// settings a login hint points to.
type HintSettings struct {
	// Server is the setting that names the server ("--to", "server").
	Server string
	// CACert is the setting that trusts an authority ("--ca-cert",
	// "tls_trusted_ca_certs").
	CACert string
	// Timeout is the setting that bounds a token request.
	Timeout string
	// APIKey says that the login uses an API key, not a password.
	APIKey bool
}

// LoginHint says what to do about a failed token request err to server:
// trust the server's authority, look up the realm, check the credentials,
// or check the address. It is "" when there is nothing to suggest (the
// server failed or is rate limiting: that heals by itself), or when the
// refusal's Error carries its own hint (a scope the registration lacks).
func LoginHint(err error, server string, s HintSettings) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Kind {
	case KindTLS:
		return fmt.Sprintf("the server's certificate is not trusted here: name the authority that signed it with %s <pem file>", s.CACert)
	case KindUnreachable:
		return fmt.Sprintf("check %s (%s) and that this machine reaches it", s.Server, server)
	case KindTimeout:
		return fmt.Sprintf("the server did not answer in time: check the network, or raise %s", s.Timeout)
	case KindRefused:
		if e.Hint != "" {
			return "" // the error says what to fix itself
		}
		for _, m := range e.Messages {
			if strings.Contains(strings.ToLower(m), "realm") {
				return fmt.Sprintf("check the realm: apic-auth-proxy apic-realms --server %s lists them", server)
			}
		}
		if s.APIKey {
			return "check the API key and the client id and secret"
		}
		if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
			return "check the user name, the password and the client id and secret"
		}
		return "check the credentials and the realm"
	}
	return ""
}
