// Package statuscmd registers the status command with Caddy's command
// line: it reads /apic_auth/status (and, with --wait, /apic_auth/ready)
// from a running proxy's admin API, prints it, and says in its exit
// status whether every identity holds a valid token. It is imported by
// cmd/apic-auth-proxy and by the module's root package, not by
// caddymodule.
package statuscmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "status",
		Usage: "[--address <interface>] [--config <path> [--adapter <name>]] [--name <identity>] [--format table|json] [--wait <duration>]",
		Short: "Shows whether the running proxy holds valid API Connect tokens",
		Long: `
Reads /apic_auth/status from the admin API of a running apic-auth-proxy
and prints, for each apic_auth identity, its user, its state, when its
token expires and when the next token request is due, and the last
error:

  NAME          USER       STATE         EXPIRES-IN  NEXT-REFRESH  LAST-ERROR
  ci-developer  developer  valid         7h42m       5h42m         -

--format json prints the endpoint's JSON as it came (the full last
error, the counters).

The admin address is found as caddy reload and caddy stop find it:
--address (host:port, or unix//path for a unix socket), else the admin
setting of the config that --config names, else localhost:2019. The
admin API must be on: the admin global option of the Caddyfile, such as
admin unix//run/apic-auth-proxy/admin.sock|0600.

--wait <duration> first waits, up to the duration, until every identity
is ready (GET /apic_auth/ready answers 200, asked every 250 ms), for a
CI job that must not start before the proxy can serve; the proxy may
still be starting. The status is printed afterwards either way.

Exit status (for scripts and exec probes):
  0  every identity holds a valid token
  1  the admin API could not be reached or read
  2  the admin API answered, and some identity holds no valid token
     (or there is none, or none of --name)
`,
		CobraFunc: func(cmd *cobra.Command) {
			fs := cmd.Flags()
			fs.StringP("config", "c", "", "configuration file whose admin setting names the admin address, if --address is not used")
			fs.StringP("adapter", "a", "", "name of the config adapter of --config")
			fs.String("address", "", "the admin API's address, if not the config's or the default (host:port, or unix//path)")
			fs.String("name", "", "report on this identity alone")
			fs.String("format", "table", "table or json")
			fs.Duration("wait", 0, "wait up to this long until every identity is ready")
			cmd.Args = cobra.NoArgs
			cmd.RunE = runE
		},
	})
}

// Exit statuses of the command.
const (
	exitReady       = 0
	exitUnreachable = 1
	exitNotReady    = 2
)

// pollInterval is how often --wait asks /apic_auth/ready.
const pollInterval = 250 * time.Millisecond

// options are the command's settings.
type options struct {
	address string // the admin API's
	name    string
	json    bool
	wait    time.Duration
}

func runE(cmd *cobra.Command, _ []string) error {
	cmd.SilenceUsage = true
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	o := options{name: fl.String("name"), wait: fl.Duration("wait")}
	switch f := fl.String("format"); f {
	case "table":
	case "json":
		o.json = true
	default:
		return fmt.Errorf("--format: want table or json, got %q", f)
	}
	if o.wait < 0 {
		return fmt.Errorf("--wait: want a positive duration, got %s", o.wait)
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return fmt.Errorf("finding the admin API's address: %v", err)
	}
	o.address = addr
	code, err := run(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
	if err != nil {
		return err // cobra prints "Error: ..."; the exit status is 1
	}
	if code == exitReady {
		return nil
	}
	// Caddy's command line carries an exit status other than 0 and 1
	// only in the error of a wrapped command function.
	cmd.SilenceErrors = true
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(cmd, nil)
}

// identity is what the table shows of an identity in /apic_auth/status.
type identity struct {
	Name         string     `json:"name"`
	User         string     `json:"user"`
	State        string     `json:"state"`
	Ready        bool       `json:"ready"`
	TokenExpires *time.Time `json:"token_expires"`
	RefreshAt    *time.Time `json:"refresh_at"`
	RetryAt      *time.Time `json:"retry_at"`
	LastError    string     `json:"last_error"`
}

// run waits when asked, reads the status and prints it; it returns the
// exit status, or an error when the admin API cannot be read (exit
// status 1).
func run(ctx context.Context, o options, stdout, stderr io.Writer) (int, error) {
	query := ""
	if o.name != "" {
		query = "?name=" + url.QueryEscape(o.name)
	}
	if o.wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, o.wait)
		defer cancel()
		if !awaitReady(ctx, o.address, query) {
			fmt.Fprintf(stderr, "not ready within %s\n", o.wait)
		}
	}
	body, err := adminGet(o.address, "/apic_auth/status"+query)
	if err != nil {
		return exitUnreachable, fmt.Errorf("cannot read /apic_auth/status from the admin API at %s: %v\n"+
			"Is apic-auth-proxy running with its admin API there? Name the address with --address (unix//path for a socket) or the config with --config; "+
			"the Caddyfile's admin global option turns the admin API on, e.g. admin \"unix//run/apic-auth-proxy/admin.sock|0600\"", o.address, err)
	}
	var ids []identity
	if err := json.Unmarshal(body, &ids); err != nil {
		return exitUnreachable, fmt.Errorf("the admin API at %s answered /apic_auth/status with something other than its JSON list: %v", o.address, err)
	}
	if o.json {
		if _, err := stdout.Write(body); err != nil {
			return exitUnreachable, err
		}
	} else if len(ids) > 0 {
		printTable(stdout, ids, time.Now())
	}
	if len(ids) == 0 {
		if o.name != "" {
			fmt.Fprintf(stderr, "no apic_auth identity named %q\n", o.name)
		} else {
			fmt.Fprintln(stderr, "no apic_auth identity is configured")
		}
		return exitNotReady, nil
	}
	for _, id := range ids {
		if !id.Ready {
			return exitNotReady, nil
		}
	}
	return exitReady, nil
}

// adminGet GETs path from the admin API with Caddy's own client for it
// (unix sockets included), and returns the body of a 2xx answer.
func adminGet(address, path string) ([]byte, error) {
	resp, err := caddycmd.AdminAPIRequest(address, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}

// awaitReady asks /apic_auth/ready until it answers 200 (true) or ctx
// ends (false). Each request runs apart, so that one that hangs does not
// outlast ctx.
func awaitReady(ctx context.Context, address, query string) bool {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done := make(chan error, 1)
		go func() {
			_, err := adminGet(address, "/apic_auth/ready"+query)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				return true
			}
		case <-ctx.Done():
			return false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
}

// printTable prints the identities as an aligned table.
func printTable(w io.Writer, ids []identity, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUSER\tSTATE\tEXPIRES-IN\tNEXT-REFRESH\tLAST-ERROR")
	for _, id := range ids {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id.Name, id.User, id.State,
			expiresIn(id.TokenExpires, now), nextRefresh(id, now), shortError(id.LastError))
	}
	_ = tw.Flush()
}

// expiresIn is how long the token has left: "-" without a token.
func expiresIn(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return "-"
	case !t.After(now):
		return "expired"
	}
	return human(t.Sub(now))
}

// nextRefresh is when the next token request is due: the end of a
// back-off or cool-down, the background refresh of a valid token, "now"
// while one is under way, "-" when the next request through the proxy
// makes it.
func nextRefresh(id identity, now time.Time) string {
	var at *time.Time
	switch id.State {
	case "refreshing":
		return "now"
	case "backing_off", "cooling_down":
		at = id.RetryAt
	case "valid":
		at = id.RefreshAt
	}
	switch {
	case at == nil:
		return "-"
	case !at.After(now):
		return "now"
	}
	return human(at.Sub(now))
}

// human writes a duration in its two largest units: 2d3h, 7h42m, 4m10s,
// 9s.
func human(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= day:
		return fmt.Sprintf("%dd%dh", d/day, d%day/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// errorWidth bounds LAST-ERROR in the table.
const errorWidth = 72

// shortError is an error on one line, at most errorWidth characters,
// without the token endpoint's URL that starts most (the identity names
// its server): it keeps the start (what failed) and the end (the
// server's words), and elides the middle. "-" for none.
func shortError(s string) string {
	fields := strings.Fields(s)
	if len(fields) > 2 && fields[0] == "token" && fields[1] == "endpoint" {
		fields = fields[3:]
	}
	s = strings.Join(fields, " ")
	if s == "" {
		return "-"
	}
	if utf8.RuneCountInString(s) <= errorWidth {
		return s
	}
	r := []rune(s)
	head := errorWidth * 2 / 5
	tail := errorWidth - head - 1
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
