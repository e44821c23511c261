package toolkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// EnvOr returns the variable name's value, or def when it is unset or
// empty.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// AddLoginFlags registers the flags shared by the commands that log in
// (apic-proxy, apic-token, apic-register): where API Connect is, how to
// trust it, and who logs in. defaultRealm is the realm when neither
// --realm nor APIC_REALM names one. Secrets have file flags only.
func AddLoginFlags(cmd *cobra.Command, defaultRealm string) {
	addServerFlags(cmd)
	fs := cmd.Flags()
	fs.String("realm", EnvOr("APIC_REALM", defaultRealm), "realm of the user ($APIC_REALM)")
	fs.String("username", os.Getenv("APIC_USERNAME"), "user name ($APIC_USERNAME)")
	fs.String("client-id", os.Getenv("APIC_CLIENT_ID"), "registration client id ($APIC_CLIENT_ID)")
	fs.String("password-file", "", "file holding the password (else $APIC_PASSWORD, else standard input)")
	fs.String("client-secret-file", "", "file holding the client secret (else $APIC_CLIENT_SECRET)")
	fs.String("api-key-file", "", "file holding an API key, instead of username and password (else $APIC_API_KEY)")
}

// LoginNames name the credentials by the flags and variables of
// AddLoginFlags, for apic.Credentials.Check. Each call returns a new map,
// for the caller to add to.
func LoginNames() map[string]string {
	return map[string]string{
		"realm":         "--realm (APIC_REALM)",
		"username":      "--username (APIC_USERNAME)",
		"password":      "a password (APIC_PASSWORD, --password-file or standard input)",
		"client_id":     "--client-id (APIC_CLIENT_ID)",
		"client_secret": "a client secret (APIC_CLIENT_SECRET or --client-secret-file)",
	}
}

// addServerFlags registers where API Connect is and how to trust it:
// --to, --insecure and --ca-cert.
func addServerFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.String("to", os.Getenv("APIC_SERVER"), "API Connect platform API base URL, scheme://host[:port][/prefix] ($APIC_SERVER)")
	fs.Bool("insecure", false, "do not verify API Connect's TLS certificate (INSECURE)")
	fs.StringArray("ca-cert", nil, "PEM file of a certificate authority to trust for API Connect (repeatable)")
}

// SecretSource is where one secret comes from: a file named by a flag, or
// an APIC_* variable. The zero value is neither.
type SecretSource struct {
	flag string // the file flag, for errors
	file string
	env  string // the variable's name
}

// Set reports whether the secret has a source.
func (s SecretSource) Set() bool { return s.file != "" || s.env != "" }

// FromFile reports whether the secret comes from a file a flag names.
func (s SecretSource) FromFile() bool { return s.file != "" }

// placeholder is the Caddy placeholder that reads the secret, so that a
// config holds the placeholder and not the secret; "" for none.
func (s SecretSource) Placeholder() string {
	switch {
	case s.file != "":
		return "{file." + s.file + "}"
	case s.env != "":
		return "{env." + s.env + "}"
	}
	return ""
}

// value reads the secret: the variable's value, or the file's content
// without its final line ending (as Caddy's {file.*} reads it); "" for
// none. Errors name the flag and the file, never the content.
func (s SecretSource) Value() (string, error) {
	switch {
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", fmt.Errorf("--%s: %v", s.flag, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", fmt.Errorf("--%s: %s is empty", s.flag, s.file)
		}
		return v, nil
	case s.env != "":
		return os.Getenv(s.env), nil
	}
	return "", nil
}

// CredentialSources are where the secrets of one login come from. A
// password with no source comes from standard input.
type CredentialSources struct {
	Password, ClientSecret, APIKey SecretSource
}

// GatherCredentials picks each secret's source, for every command that
// logs in: its --*-file flag first, then its APIC_* variable. With an API
// key there is no password.
func GatherCredentials(fl caddycmd.Flags) CredentialSources {
	pick := func(flag, env string) SecretSource {
		if f := fl.String(flag); f != "" {
			return SecretSource{flag: flag, file: f}
		}
		if os.Getenv(env) != "" {
			return SecretSource{flag: flag, env: env}
		}
		return SecretSource{flag: flag}
	}
	src := CredentialSources{
		ClientSecret: pick("client-secret-file", "APIC_CLIENT_SECRET"),
		APIKey:       pick("api-key-file", "APIC_API_KEY"),
	}
	if !src.APIKey.Set() {
		src.Password = pick("password-file", "APIC_PASSWORD")
	}
	return src
}

// ReadPassword reads a password from a terminal without echo, or the first
// line of piped input.
func ReadPassword(in *os.File, prompt io.Writer, user string) (string, error) {
	return (&secretInput{in: in, prompt: prompt}).password(user)
}

// password reads the password of user, for every command that logs in.
func (s *secretInput) password(user string) (string, error) {
	return s.read(fmt.Sprintf("API Connect password for %s: ", user), "password",
		"set APIC_PASSWORD, use --password-file, or pipe it on standard input")
}

// secretInput reads secrets from standard input: from a terminal without
// echo, after a prompt; else one line of piped input each, in order.
type secretInput struct {
	in     io.Reader
	prompt io.Writer
	br     *bufio.Reader // piped input, kept between reads
}

// read reads one secret. what names it in errors ("password"); hint says
// where else it can come from.
func (s *secretInput) read(prompt, what, hint string) (string, error) {
	if f, ok := s.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(s.prompt, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(s.prompt)
		if err != nil {
			return "", fmt.Errorf("reading the %s: %v", what, err)
		}
		if len(b) == 0 {
			return "", fmt.Errorf("no %s given", what)
		}
		return string(b), nil
	}
	if s.br == nil {
		s.br = bufio.NewReader(s.in)
	}
	line, err := s.br.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the %s from standard input: %v", what, err)
		}
		return "", fmt.Errorf("no %s: %s", what, hint)
	}
	return line, nil
}
