package caddymodule

import (
	"strings"
)

// ErrorMessage returns err's message as the command line shows it. When
// err comes from an apic_auth handler's Provision, through Caddy's chain of
// module loads ("loading http app module: provision http: server srv0:
// ... provision http.handlers.apic_auth: realm: ..."), it is the handler's
// own message after "apic_auth: ", and on a second line where the handler
// is, such as "in server srv0, route 1 > 0" (the server's route 1, in it
// the subroute's route 0). Any other error's message is returned as it is.
//
// Caddy wraps module errors with %v, so no error type survives the chain:
// the handler's part is found after Caddy's "provision <module ID>: ".
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	marker := "provision " + string(Handler{}.CaddyModule().ID) + ": "
	i := strings.LastIndex(msg, marker)
	if i < 0 || (i > 0 && !strings.HasSuffix(msg[:i], ": ")) {
		return msg
	}
	short := "apic_auth: " + msg[i+len(marker):]
	if where := errorLocation(msg[:i]); where != "" {
		short += "\n" + where
	}
	return short
}

// errorLocation names the server and routes in Caddy's chain of module
// loads, chain, as "in server srv0, route 1 > 0" (nested routes in order),
// or "" when chain names neither.
func errorLocation(chain string) string {
	var server string
	var routes []string
	for seg := range strings.SplitSeq(chain, ": ") {
		if name, ok := strings.CutPrefix(seg, "server "); ok && name != "" && !strings.Contains(name, " ") {
			server, routes = name, nil
		}
		if n, ok := strings.CutPrefix(seg, "route "); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			routes = append(routes, n)
		}
	}
	var parts []string
	if server != "" {
		parts = append(parts, "server "+server)
	}
	if len(routes) > 0 {
		parts = append(parts, "route "+strings.Join(routes, " > "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "in " + strings.Join(parts, ", ")
}
