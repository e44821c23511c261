package toolkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// Defaults of the chores.
const (
	defaultAdminRealm    = "admin/default-idp-1"
	defaultProviderRealm = "provider/default-idp-2"
	defaultCallTimeout   = 10 * time.Second
)

const secretsHelp = `Secrets are never flag values (they would show in ps): the password comes
from APIC_PASSWORD, --password-file, or standard input (read without echo
on a terminal); the client secret from APIC_CLIENT_SECRET or
--client-secret-file; an API key (instead of username and password) from
APIC_API_KEY or --api-key-file.

--credentials reads the server, client id and client secret from the
toolkit's credentials.json ("Download toolkit" in API Manager). A flag
given on the command line wins over the file; the file wins over the
APIC_* variables.`

// Commands returns the toolkit's commands, for caddycmd.RegisterCommand.
func Commands() []caddycmd.Command {
	return []caddycmd.Command{{
		Name:  "apic-token",
		Usage: "[--to <url>] [--credentials <credentials.json>] [--realm <realm>] [--username <user>] [--client-id <id>] [--password-file <file>] [--client-secret-file <file>] [--api-key-file <file>] [--insecure] [--ca-cert <pem>] [--json | --check] [--apic-config [--apic-config-file <file>]]",
		Short: "Log in to API Connect and print the access token",
		Long: `
Logs in to IBM API Connect with the settings of apic-proxy (the same
flags and APIC_* variables) and prints the access token alone on
standard output:

  export APIC_SERVER=https://apim.example.com APIC_USERNAME=me
  export APIC_CLIENT_ID=... APIC_CLIENT_SECRET=...
  TOKEN=$(apic-auth-proxy apic-token)     # asks for the password

--json prints the whole token response as JSON instead: access_token,
token_type, expires_in, refresh_token (when the server gives one) and
expires_at (RFC 3339).

--check prints who the token belongs to (GET /api/me) and when it
expires, not the token; on failure it exits non-zero with API Connect's
own message on standard error.

--apic-config writes the token into the apic toolkit's token file,
$HOME/.apiconnect/token (or --apic-config-file), under <server>/api,
keeping the entries of other servers, so that apic commands run without
apic login. The file gets mode 0600. Nothing is printed on standard
output then (unless --json or --check asks); a line on standard error
says where the token went.

` + secretsHelp + `
`,
		CobraFunc: func(cmd *cobra.Command) {
			AddLoginFlags(cmd, defaultProviderRealm)
			AddChoreFlags(cmd)
			fs := cmd.Flags()
			fs.Bool("json", false, "print the whole token response as JSON")
			fs.Bool("check", false, "print who the token belongs to and when it expires, not the token")
			fs.Bool("apic-config", false, "write the token into the apic toolkit's token file ($HOME/.apiconnect/token) instead of printing it")
			fs.String("apic-config-file", "", "the toolkit token file to write (implies --apic-config)")
			cmd.Args = cobra.NoArgs
			cmd.RunE = choreRunE(func(fl caddycmd.Flags, _ []string, in *secretInput) (tokenOptions, error) {
				return tokenOptionsFromFlags(fl, in)
			}, runAPICToken)
		},
	}, {
		Name:  "apic-register",
		Usage: "<registration.yaml|json> [--to <url>] [--credentials <credentials.json>] [--realm <realm>] [--username <user>] [--client-id <id>] [--password-file <file>] [--client-secret-file <file>] [--api-key-file <file>] [--insecure] [--ca-cert <pem>] [--test-username <user>] [--test-realm <realm>] [--test-password-file <file>]",
		Short: "Create a client registration in API Connect and prove it",
		Long: `
Creates a client registration (a client id and secret) with
POST /api/cloud/registrations, logged in as a Cloud Manager user (the
realm defaults to admin/default-idp-1), from the YAML or JSON document
that apic registrations:create takes:

  type: registration
  api_version: 2.0.0
  name: apic-auth-proxy-ci
  title: apic-auth-proxy CI
  client_type: toolkit
  client_id: apic-auth-proxy-ci
  client_secret: a-long-random-secret
  scopes: [cloud:view, cloud:manage, provider-org:view, org:view, org:manage, my:view, my:manage]

name, client_id and client_secret are required; the read-only fields
type, api_version, id and url are accepted and not sent. It prints the
registration's name, state, client id and URL (never the secret), then
proves the new client id and secret with a token request for the user
that --test-username names (realm --test-realm, default
provider/default-idp-2; password from APIC_TEST_PASSWORD,
--test-password-file or standard input, after the Cloud Manager
password when both are read from there).

` + secretsHelp + `
`,
		CobraFunc: func(cmd *cobra.Command) {
			AddLoginFlags(cmd, defaultAdminRealm)
			AddChoreFlags(cmd)
			fs := cmd.Flags()
			fs.String("test-username", "", "user to request a token for with the new registration (none: no token request)")
			fs.String("test-realm", defaultProviderRealm, "realm of --test-username")
			fs.String("test-password-file", "", "file holding the password of --test-username (else $APIC_TEST_PASSWORD, else standard input)")
			cmd.Args = cobra.ExactArgs(1)
			cmd.RunE = choreRunE(func(fl caddycmd.Flags, args []string, in *secretInput) (registerOptions, error) {
				return registerOptionsFromFlags(fl, args[0], in)
			}, runAPICRegister)
		},
	}, {
		Name:  "apic-realms",
		Usage: "--server <url> [--credentials <credentials.json>] [--insecure] [--ca-cert <pem>] [--json]",
		Short: "List API Connect's identity providers and their realms",
		Long: `
Lists the Cloud Manager (admin) and API Manager (provider) identity
providers of an API Connect server with the realm string a login names,
from GET /api/cloud/admin/identity-providers and
/api/cloud/provider/identity-providers. No login is needed.

  apic-auth-proxy apic-realms --server https://apim.example.com

prints an aligned table with the columns REALM, TITLE, TYPE and DEFAULT.
--json prints the two lists as the server sent them, as
{"admin": ..., "provider": ...}.

--to and APIC_SERVER work as --server does; --credentials takes the
server from the toolkit's credentials.json.
`,
		CobraFunc: func(cmd *cobra.Command) {
			addServerFlags(cmd)
			AddChoreFlags(cmd)
			cmd.Flags().Bool("json", false, "print the lists as the server sent them")
			cmd.Args = cobra.NoArgs
			cmd.RunE = choreRunE(func(fl caddycmd.Flags, _ []string, _ *secretInput) (realmsOptions, error) {
				so, _, err := ServerFromFlags(fl)
				return realmsOptions{ServerOptions: so, JSON: fl.Bool("json")}, err
			}, runAPICRealms)
		},
	}}
}

// AddChoreFlags registers the flags the chores (and apic-proxy) add to
// those of AddLoginFlags or addServerFlags: --server, --credentials and
// --timeout.
func AddChoreFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.String("server", "", "same as --to: the platform API base URL, as the toolkit's --server takes it")
	fs.String("credentials", "", "the toolkit's credentials.json: supplies the server, client id and client secret")
	fs.Duration("timeout", defaultCallTimeout, "bound of each call to API Connect")
}

// choreRunE adapts a chore to cobra: parse reads its options from the
// flags, the arguments and the secrets' input, and run runs it. Standard
// input, output and error are the command's, and a failure comes out as
// "Error: ..." on standard error (cobra prints it) with exit status 1.
func choreRunE[O any](
	parse func(fl caddycmd.Flags, args []string, in *secretInput) (O, error),
	run func(ctx context.Context, o O, stdout, stderr io.Writer) error,
) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceUsage = true
		in := &secretInput{in: cmd.InOrStdin(), prompt: cmd.ErrOrStderr()}
		o, err := parse(caddycmd.Flags{FlagSet: cmd.Flags()}, args, in)
		if err != nil {
			return err
		}
		return run(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
}

// ServerOptions say where API Connect is and how to reach it, as
// ServerFromFlags reads them.
type ServerOptions struct {
	Server     string
	serverFrom string // the setting that named Server, for errors
	Insecure   bool
	CACerts    []string
	// Timeout bounds each call. Default 10 s.
	Timeout time.Duration
}

// From names the setting that gave Server (--server, --to, --credentials
// or APIC_SERVER), for errors about it.
func (o ServerOptions) From() string { return o.serverFrom }

// ServerFromFlags reads --server/--to, --credentials, --insecure,
// --ca-cert and --timeout. The server comes from --server or --to given
// on the command line, else from --credentials, else from APIC_SERVER.
// The toolkit credentials, when --credentials names a file, are returned
// too.
func ServerFromFlags(fl caddycmd.Flags) (ServerOptions, *apic.ToolkitCredentials, error) {
	var tk *apic.ToolkitCredentials
	if p := fl.String("credentials"); p != "" {
		c, err := apic.LoadToolkitCredentials(p)
		if err != nil {
			return ServerOptions{}, nil, fmt.Errorf("--%v", err) // "--credentials ...: what is wrong"
		}
		tk = &c
	}
	o := ServerOptions{Insecure: fl.Bool("insecure"), Timeout: fl.Duration("timeout")}
	var err error
	if o.CACerts, err = fl.GetStringArray("ca-cert"); err != nil {
		return ServerOptions{}, nil, err
	}
	to, server := fl.String("to"), fl.String("server")
	switch {
	case fl.Changed("server") && fl.Changed("to") && server != to:
		return ServerOptions{}, nil, errors.New("--server and --to name different servers: give one")
	case fl.Changed("server"):
		o.Server, o.serverFrom = server, "--server"
	case fl.Changed("to"):
		o.Server, o.serverFrom = to, "--to"
	case tk != nil:
		o.Server, o.serverFrom = tk.Server, "--credentials"
	default:
		o.Server, o.serverFrom = to, "APIC_SERVER"
	}
	if err := o.check(); err != nil {
		return ServerOptions{}, nil, err
	}
	return o, tk, nil
}

// check names what is missing or wrong.
func (o ServerOptions) check() error {
	if o.Server == "" {
		return errors.New("--server (or --to, APIC_SERVER or --credentials) is required: the API Connect platform API base URL")
	}
	if err := apic.CheckServer(o.Server); err != nil {
		from := o.serverFrom
		if from == "" {
			from = "server"
		}
		return fmt.Errorf("%s: %v", from, err)
	}
	if o.Insecure && len(o.CACerts) > 0 {
		return errors.New("--insecure and --ca-cert exclude each other")
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout: want a positive duration, got %s", o.Timeout)
	}
	return nil
}

// httpClient builds the HTTP client of the server, warning on stderr when
// TLS verification is off.
func (o ServerOptions) httpClient(stderr io.Writer) (*http.Client, error) {
	hc, err := apic.NewHTTPClient(o.Insecure, o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %v", err)
	}
	if o.Insecure && strings.HasPrefix(o.Server, "https:") {
		fmt.Fprintln(stderr, "warning: --insecure: API Connect's TLS certificate is not verified; whoever is in between can read and change the traffic, credentials and tokens included")
	}
	return hc, nil
}

// withTimeout calls f with a context bounded by d.
func withTimeout[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// loginOptions are a server and the credentials of a user on it.
type loginOptions struct {
	ServerOptions
	Credentials apic.Credentials
	// passwordFromStdin: the password is still to be read from standard
	// input (ReadPassword does it).
	passwordFromStdin bool
}

// loginFromFlags reads the login settings as apic-proxy does, plus
// --credentials: the client id and secret come from a flag given on the
// command line, else from --credentials, else from APIC_CLIENT_ID and
// APIC_CLIENT_SECRET. It checks all it can before any password is asked
// for; a password that is to come from standard input is read by
// ReadPassword.
func loginFromFlags(fl caddycmd.Flags) (loginOptions, error) {
	so, tk, err := ServerFromFlags(fl)
	if err != nil {
		return loginOptions{}, err
	}
	o := loginOptions{ServerOptions: so}
	cr := &o.Credentials
	cr.Realm, cr.Username, cr.ClientID = fl.String("realm"), fl.String("username"), fl.String("client-id")
	src := GatherCredentials(fl)
	if ClientFromToolkit(fl, tk) {
		cr.ClientID = tk.ClientID
		if src.ClientSecret.file == "" {
			cr.ClientSecret = tk.ClientSecret
		}
	}
	if cr.ClientSecret == "" {
		if cr.ClientSecret, err = src.ClientSecret.Value(); err != nil {
			return loginOptions{}, err
		}
	}
	if cr.APIKey, err = src.APIKey.Value(); err != nil {
		return loginOptions{}, err
	}
	if cr.APIKey == "" {
		if cr.Password, err = src.Password.Value(); err != nil {
			return loginOptions{}, err
		}
		o.passwordFromStdin = cr.Password == "" && cr.Username != ""
	} else {
		cr.Username, cr.Realm = "", ""
	}
	names := LoginNames()
	names["client_id"] = "--client-id (APIC_CLIENT_ID or --credentials)"
	names["client_secret"] = "a client secret (APIC_CLIENT_SECRET, --client-secret-file or --credentials)"
	if err := checkLogin(*cr, o.passwordFromStdin, names); err != nil {
		return loginOptions{}, err
	}
	return o, nil
}

// ClientFromToolkit reports whether the client id comes from the toolkit
// credentials tk (nil for none): unless --client-id names another one. The
// file's client secret goes with it, unless --client-secret-file names one.
func ClientFromToolkit(fl caddycmd.Flags, tk *apic.ToolkitCredentials) bool {
	return tk != nil && (!fl.Changed("client-id") || fl.String("client-id") == tk.ClientID)
}

// checkLogin checks credentials with apic.Credentials.Check, counting a
// password that standard input is still to give as given: it is read
// after the check, so that nobody types a password for a login that
// would fail anyway.
func checkLogin(cr apic.Credentials, passwordFromStdin bool, names map[string]string) error {
	if passwordFromStdin {
		cr.Password = "(from standard input)"
	}
	return cr.Check(names)
}

// ReadPassword reads the password from standard input when no other
// source gave one.
func (o *loginOptions) ReadPassword(in *secretInput) error {
	if !o.passwordFromStdin {
		return nil
	}
	pw, err := in.password(o.Credentials.Username)
	if err != nil {
		return err
	}
	o.Credentials.Password, o.passwordFromStdin = pw, false
	return nil
}

// who names the user logging in, for messages.
func (o loginOptions) who() string {
	if o.Credentials.APIKey != "" {
		return "the user of the API key"
	}
	return fmt.Sprintf("%s (realm %s)", o.Credentials.Username, o.Credentials.Realm)
}

// login makes a client of o's server and requests a token with it,
// naming the user in the error. The caller closes the client's idle
// connections when done with it.
func (o loginOptions) login(ctx context.Context, stderr io.Writer) (*apic.Client, *apic.Token, error) {
	hc, err := o.httpClient(stderr)
	if err != nil {
		return nil, nil, err
	}
	c := &apic.Client{Server: o.Server, Credentials: o.Credentials, HTTP: hc}
	tok, err := withTimeout(ctx, o.Timeout, c.Login)
	if err != nil {
		hc.CloseIdleConnections()
		return nil, nil, fmt.Errorf("logging in as %s: %w", o.who(), err)
	}
	return c, tok, nil
}

// formatExpiry is how the chores print a token's expiry.
func formatExpiry(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// tokenOptions are apic-token's.
type tokenOptions struct {
	loginOptions
	// JSON prints the whole token response as JSON.
	JSON bool
	// Check prints who the token belongs to and when it expires.
	Check bool
	// APICConfigFile, when set, is the toolkit token file to write the
	// token into, instead of printing it.
	APICConfigFile string
}

func tokenOptionsFromFlags(fl caddycmd.Flags, in *secretInput) (tokenOptions, error) {
	o := tokenOptions{JSON: fl.Bool("json"), Check: fl.Bool("check")}
	if o.JSON && o.Check {
		return o, errors.New("--json and --check exclude each other: --check prints a report, not the token")
	}
	if fl.Bool("apic-config") || fl.Changed("apic-config-file") {
		o.APICConfigFile = fl.String("apic-config-file")
		if o.APICConfigFile == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return o, fmt.Errorf("--apic-config: no home directory (%v): name the file with --apic-config-file", err)
			}
			o.APICConfigFile = apic.ToolkitTokenFile(home)
		}
	}
	var err error
	if o.loginOptions, err = loginFromFlags(fl); err != nil {
		return o, err
	}
	return o, o.ReadPassword(in)
}

// tokenJSON is what apic-token --json prints.
type tokenJSON struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token,omitempty"`
	RefreshExpiresIn int64  `json:"refresh_expires_in,omitempty"`
	ExpiresAt        string `json:"expires_at"`
}

// runAPICToken logs in and prints the token, its JSON or a check report,
// and writes it into the toolkit's token file, as o asks.
func runAPICToken(ctx context.Context, o tokenOptions, stdout, stderr io.Writer) error {
	c, tok, err := o.login(ctx, stderr)
	if err != nil {
		return err
	}
	defer c.HTTP.CloseIdleConnections()
	if o.Check {
		me, err := withTimeout(ctx, o.Timeout, func(ctx context.Context) (*apic.Me, error) { return c.Me(ctx, tok) })
		if err != nil {
			return fmt.Errorf("the login as %s worked, but asking who the token belongs to failed: %w", o.who(), err)
		}
		writeCheckReport(stdout, o, me, tok)
	}
	if o.APICConfigFile != "" {
		if err := apic.WriteToolkitToken(o.APICConfigFile, o.Server, tok.AccessToken, tok.RefreshToken); err != nil {
			return fmt.Errorf("--apic-config: %v", err)
		}
		fmt.Fprintf(stderr, "wrote the token for %s to %s (expires %s)\n", apic.ToolkitTokenKey(o.Server), o.APICConfigFile, formatExpiry(tok.Expiry))
	}
	switch {
	case o.JSON:
		out := tokenJSON{
			AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresIn: tok.ExpiresIn,
			RefreshToken: tok.RefreshToken, ExpiresAt: formatExpiry(tok.Expiry),
		}
		if re := tok.RefreshExpiry; !re.IsZero() {
			out.RefreshExpiresIn = int64(time.Until(re).Round(time.Second) / time.Second)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case !o.Check && o.APICConfigFile == "":
		_, err := fmt.Fprintln(stdout, tok.AccessToken)
		return err
	}
	return nil
}

// writeCheckReport prints apic-token --check's report.
func writeCheckReport(w io.Writer, o tokenOptions, me *apic.Me, tok *apic.Token) {
	realm := me.Realm
	if realm == "" {
		realm = apic.TokenRealm(tok.AccessToken)
	}
	if realm == "" {
		realm = o.Credentials.Realm
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	line("user", me.Username)
	line("name", strings.TrimSpace(me.FirstName+" "+me.LastName))
	line("realm", realm)
	line("email", me.Email)
	line("server", o.Server)
	line("expires", fmt.Sprintf("%s (in %s)", formatExpiry(tok.Expiry), time.Until(tok.Expiry).Round(time.Second)))
	_ = tw.Flush()
}

// registerOptions are apic-register's.
type registerOptions struct {
	// loginOptions are the Cloud Manager user's.
	loginOptions
	DocumentPath string
	Document     *apic.RegistrationDocument
	// Test is the user whose token request proves the new registration;
	// nil for none.
	Test *apic.Credentials
}

func registerOptionsFromFlags(fl caddycmd.Flags, docPath string, in *secretInput) (registerOptions, error) {
	o := registerOptions{DocumentPath: docPath}
	data, err := readLimited(docPath, apic.MaxRegistrationDocument)
	if err != nil {
		return o, fmt.Errorf("reading the registration document: %v", err)
	}
	if o.Document, err = apic.ParseRegistrationDocument(data); err != nil {
		return o, fmt.Errorf("registration document %s: %v", docPath, err)
	}
	if o.loginOptions, err = loginFromFlags(fl); err != nil {
		return o, err
	}
	var testPassword SecretSource
	if user := fl.String("test-username"); user != "" {
		o.Test = &apic.Credentials{
			Username: user, Realm: fl.String("test-realm"),
			ClientID: o.Document.ClientID, ClientSecret: o.Document.ClientSecret(),
		}
		testPassword = SecretSource{flag: "test-password-file", file: fl.String("test-password-file")}
		if testPassword.file == "" && os.Getenv("APIC_TEST_PASSWORD") != "" {
			testPassword.env = "APIC_TEST_PASSWORD"
		}
		if o.Test.Password, err = testPassword.Value(); err != nil {
			return o, err
		}
		names := map[string]string{"realm": "--test-realm", "password": "a test password (APIC_TEST_PASSWORD, --test-password-file or standard input)"}
		if err := checkLogin(*o.Test, o.Test.Password == "", names); err != nil {
			return o, err
		}
	} else if fl.Changed("test-password-file") {
		return o, errors.New("--test-password-file: name the user with --test-username")
	}
	// Standard input: the Cloud Manager password first, then the test
	// user's.
	if err := o.ReadPassword(in); err != nil {
		return o, err
	}
	if o.Test != nil && o.Test.Password == "" {
		pw, err := in.read(fmt.Sprintf("API Connect password for %s (realm %s), to test the new registration: ", o.Test.Username, o.Test.Realm),
			"test password", "set APIC_TEST_PASSWORD, use --test-password-file, or pipe it on standard input after the Cloud Manager password")
		if err != nil {
			return o, err
		}
		o.Test.Password = pw
	}
	return o, nil
}

// readLimited reads a file of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// runAPICRegister creates the registration, prints it, and proves its
// client id and secret with a token request for the test user.
func runAPICRegister(ctx context.Context, o registerOptions, stdout, stderr io.Writer) error {
	c, tok, err := o.login(ctx, stderr)
	if err != nil {
		return err
	}
	defer c.HTTP.CloseIdleConnections()
	reg, err := withTimeout(ctx, o.Timeout, func(ctx context.Context) (*apic.Registration, error) {
		return c.CreateRegistration(ctx, tok, o.Document)
	})
	if err != nil {
		return o.createError(err)
	}
	name, clientID := reg.Name, reg.ClientID
	if name == "" {
		name = o.Document.Name
	}
	if clientID == "" {
		clientID = o.Document.ClientID
	}
	state := reg.State
	if state == "" {
		state = "(not given)"
	}
	fmt.Fprintf(stdout, "created registration %s\n  state:     %s\n  client id: %s\n  url:       %s\n", name, state, clientID, reg.URL)
	if o.Test == nil {
		fmt.Fprintln(stdout, "token request with the new registration: not tried (name a user with --test-username)")
		return nil
	}
	tc := &apic.Client{Server: o.Server, Credentials: *o.Test, HTTP: c.HTTP}
	ttok, err := withTimeout(ctx, o.Timeout, tc.Login)
	if err != nil {
		return fmt.Errorf("the registration %s was created, but a token request with it for %s (realm %s) failed: %w", name, o.Test.Username, o.Test.Realm, err)
	}
	fmt.Fprintf(stdout, "token request with the new registration: ok (expires %s)\n", formatExpiry(ttok.Expiry))
	return nil
}

// createError puts a refused POST /api/cloud/registrations in plain
// words, with the server's own after them.
func (o registerOptions) createError(err error) error {
	var ae *apic.Error
	if !errors.As(err, &ae) {
		return fmt.Errorf("creating the registration %s: %w", o.Document.Name, err)
	}
	said := ""
	if m := ae.ServerMessage(); m != "" {
		said = " (API Connect said: " + m + ")"
	}
	user := o.Credentials.Username
	if user == "" {
		user = "of the API key"
	}
	switch ae.Status {
	case http.StatusConflict:
		return fmt.Errorf("a registration named %s (or with that client id) already exists%s", o.Document.Name, said)
	case http.StatusForbidden:
		return fmt.Errorf("user %s may not create registrations: log in as a Cloud Manager user (realm admin/...)%s", user, said)
	case http.StatusUnauthorized:
		return fmt.Errorf("the token of user %s was refused when creating the registration: log in again%s", user, said)
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return fmt.Errorf("the registration document %s was refused%s", o.DocumentPath, said)
	}
	return fmt.Errorf("creating the registration %s: %w", o.Document.Name, err)
}

// realmsOptions are apic-realms'.
type realmsOptions struct {
	ServerOptions
	// JSON prints the lists as the server sent them.
	JSON bool
}

// runAPICRealms lists the admin and provider identity providers.
func runAPICRealms(ctx context.Context, o realmsOptions, stdout, stderr io.Writer) error {
	hc, err := o.httpClient(stderr)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	c := &apic.Client{Server: o.Server, HTTP: hc}
	var lists []*apic.IdentityProviders
	for _, scope := range []string{"admin", "provider"} {
		l, err := withTimeout(ctx, o.Timeout, func(ctx context.Context) (*apic.IdentityProviders, error) {
			return c.IdentityProviders(ctx, scope)
		})
		if err != nil {
			return fmt.Errorf("listing the %s identity providers: %w", scope, err)
		}
		lists = append(lists, l)
	}
	if o.JSON {
		out, err := json.MarshalIndent(struct {
			Admin    json.RawMessage `json:"admin"`
			Provider json.RawMessage `json:"provider"`
		}{lists[0].Raw, lists[1].Raw}, "", "  ")
		if err != nil {
			return fmt.Errorf("the identity provider lists are not JSON: %v", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", out)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REALM\tTITLE\tTYPE\tDEFAULT")
	for _, l := range lists {
		for _, p := range l.Providers {
			def := "no"
			if p.Default {
				def = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Realm, oneLine(p.Title), p.RegistryType, def)
		}
	}
	return tw.Flush()
}

// oneLine keeps a server-given text on one table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
