package apicsim

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// User is a user of an identity provider. A user is found by realm and
// username, so the same username may exist in two realms.
type User struct {
	Username  string `yaml:"username" json:"username"`
	Password  string `yaml:"password" json:"-"`
	Realm     string `yaml:"realm" json:"realm"`
	Email     string `yaml:"email,omitempty" json:"email,omitempty"`
	FirstName string `yaml:"first_name,omitempty" json:"first_name,omitempty"`
	LastName  string `yaml:"last_name,omitempty" json:"last_name,omitempty"`
}

// Registration is a client registration: the client id and secret that
// every token request must present.
type Registration struct {
	Name         string   `yaml:"name" json:"name"`
	Title        string   `yaml:"title,omitempty" json:"title,omitempty"`
	Summary      string   `yaml:"summary,omitempty" json:"summary,omitempty"`
	State        string   `yaml:"state,omitempty" json:"state,omitempty"`
	ClientType   string   `yaml:"client_type,omitempty" json:"client_type,omitempty"`
	ClientID     string   `yaml:"client_id" json:"client_id"`
	ClientSecret string   `yaml:"client_secret" json:"-"`
	Scopes       []string `yaml:"scopes,omitempty" json:"scopes,omitempty"`
}

// IdentityProvider is a user registry exposed under a realm, for example
// admin/default-idp-1 or provider/default-idp-2.
type IdentityProvider struct {
	Name         string `yaml:"name" json:"name"`
	Title        string `yaml:"title,omitempty" json:"title"`
	Default      bool   `yaml:"default,omitempty" json:"default"`
	RegistryType string `yaml:"registry_type,omitempty" json:"registry_type"`
	UserManaged  bool   `yaml:"user_managed,omitempty" json:"user_managed"`
	// Scope is "admin" or "provider"; the realm is Scope + "/" + Name.
	Scope string `yaml:"scope" json:"-"`
}

// Realm returns the realm string of the identity provider.
func (p IdentityProvider) Realm() string { return p.Scope + "/" + p.Name }

// Org is a provider organisation (org_type provider) or the Cloud Manager
// organisation (org_type admin).
type Org struct {
	Name    string   `yaml:"name" json:"name"`
	Title   string   `yaml:"title,omitempty" json:"title"`
	OrgType string   `yaml:"org_type,omitempty" json:"org_type"`
	Owner   string   `yaml:"owner,omitempty" json:"-"`
	Members []string `yaml:"members,omitempty" json:"-"`
}

// Lockout locks a user out after Attempts failed logins in a row, for
// Duration, even with the right password. Zero Attempts disables it.
type Lockout struct {
	Attempts int           `json:"attempts"`
	Duration time.Duration `json:"-"`
}

// Config configures a Server. The zero value of every field takes the
// default that DefaultConfig documents; DefaultConfig also supplies the
// built-in users and registration.
type Config struct {
	IdentityProviders []IdentityProvider
	Users             []User
	Registrations     []Registration
	Orgs              []Org

	// TokenTTL is the access token's lifetime (the cloud setting
	// access_token_expires_in). Default 28800 s.
	TokenTTL time.Duration
	// RefreshTokens issues refresh tokens with every token (the cloud
	// setting refresh_token_enabled). Default off, as on a real server.
	RefreshTokens bool
	// RefreshTTL is the refresh token's lifetime. Default 57600 s.
	RefreshTTL time.Duration
	// APIKeyTTL is the default lifetime of an API key created with
	// POST /api/cloud/api-keys. Default 5 minutes.
	APIKeyTTL time.Duration
	// Lockout, when Attempts > 0, locks users out after failed logins.
	Lockout Lockout
	// RealmErrorStatus is the status of a token request whose realm does
	// not match the user (nothing public says which). Default 401.
	RealmErrorStatus int
	// Now is the clock. Default time.Now. Server.Advance moves it on.
	Now func() time.Time
}

// Default credentials of the built-in users and registration.
const (
	DefaultAdminUsername    = "admin"
	DefaultAdminPassword    = "7iron-hide"
	DefaultAdminRealm       = "admin/default-idp-1"
	DefaultProviderUsername = "developer"
	DefaultProviderPassword = "Passw0rd!"
	DefaultProviderRealm    = "provider/default-idp-2"
	DefaultClientID         = "clientID"
	DefaultClientSecret     = "clientPassword"
)

// AllScopes are the scopes a registration gets when it names none.
var AllScopes = []string{
	"cloud:view", "cloud:manage", "provider-org:view", "provider-org:manage",
	"org:view", "org:manage", "product-drafts:view", "product-drafts:edit",
	"api-drafts:view", "api-drafts:edit", "child:view", "child:create",
	"child:manage", "product:view", "product:stage", "product:manage",
	"approval:view", "approval:manage", "api-analytics:view",
	"api-analytics:manage", "consumer-org:view", "consumer-org:manage",
	"app:view:all", "app:manage:all", "my:view", "my:manage", "webhook:view",
}

// DefaultConfig is what the simulator runs with when given nothing: the
// Cloud Manager user admin / 7iron-hide in realm admin/default-idp-1, the
// API Manager user developer / Passw0rd! in realm provider/default-idp-2,
// their identity providers, the organisations admin and localtest, and a
// registration with client id clientID and secret clientPassword.
func DefaultConfig() Config {
	return Config{
		IdentityProviders: []IdentityProvider{
			{Name: "default-idp-1", Title: "Cloud Manager User Registry", Default: true, RegistryType: "lur", UserManaged: true, Scope: "admin"},
			{Name: "default-idp-2", Title: "API Manager User Registry", Default: true, RegistryType: "lur", UserManaged: true, Scope: "provider"},
		},
		Users: []User{
			{Username: DefaultAdminUsername, Password: DefaultAdminPassword, Realm: DefaultAdminRealm, Email: "admin@example.com", FirstName: "Cloud", LastName: "Admin"},
			{Username: DefaultProviderUsername, Password: DefaultProviderPassword, Realm: DefaultProviderRealm, Email: "developer@example.com", FirstName: "API", LastName: "Developer"},
		},
		Registrations: []Registration{
			{Name: "apic-auth-proxy", Title: "apic-auth-proxy", State: "enabled", ClientType: "toolkit", ClientID: DefaultClientID, ClientSecret: DefaultClientSecret, Scopes: AllScopes},
		},
		Orgs: []Org{
			{Name: "admin", Title: "Cloud Admin", OrgType: "admin", Owner: DefaultAdminUsername},
			{Name: "localtest", Title: "Local Test", OrgType: "provider", Owner: DefaultProviderUsername},
		},
		TokenTTL:         28800 * time.Second,
		RefreshTTL:       57600 * time.Second,
		APIKeyTTL:        5 * time.Minute,
		RealmErrorStatus: 401,
	}
}

// fileConfig is the YAML form of Config. Lists replace the built-in ones
// when given; settings override them when present.
type fileConfig struct {
	IdentityProviders []IdentityProvider `yaml:"identity_providers"`
	Users             []User             `yaml:"users"`
	Registrations     []Registration     `yaml:"registrations"`
	Orgs              []Org              `yaml:"orgs"`
	TokenTTL          string             `yaml:"token_ttl"`
	RefreshTokens     *bool              `yaml:"refresh_tokens"`
	RefreshTTL        string             `yaml:"refresh_ttl"`
	APIKeyTTL         string             `yaml:"api_key_ttl"`
	Lockout           *struct {
		Attempts int    `yaml:"attempts"`
		Duration string `yaml:"duration"`
	} `yaml:"lockout"`
	RealmErrorStatus int `yaml:"realm_error_status"`
}

// LoadConfigFile reads a YAML file of users, registrations, identity
// providers, orgs and settings on top of DefaultConfig. An example:
//
//	token_ttl: 1h
//	refresh_tokens: true
//	users:
//	  - {username: alice, password: secret, realm: provider/default-idp-2}
//	registrations:
//	  - {name: ci, client_id: ci-id, client_secret: ci-secret}
func LoadConfigFile(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return ParseConfig(data)
}

// ParseConfig parses the YAML form that LoadConfigFile reads.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && err.Error() != "EOF" {
		return Config{}, fmt.Errorf("simulator config: %w", err)
	}
	if len(fc.IdentityProviders) > 0 {
		cfg.IdentityProviders = fc.IdentityProviders
	}
	if len(fc.Users) > 0 {
		cfg.Users = fc.Users
	}
	if len(fc.Registrations) > 0 {
		cfg.Registrations = fc.Registrations
	}
	if len(fc.Orgs) > 0 {
		cfg.Orgs = fc.Orgs
	}
	for _, d := range []struct {
		name string
		val  string
		dst  *time.Duration
	}{
		{"token_ttl", fc.TokenTTL, &cfg.TokenTTL},
		{"refresh_ttl", fc.RefreshTTL, &cfg.RefreshTTL},
		{"api_key_ttl", fc.APIKeyTTL, &cfg.APIKeyTTL},
	} {
		if d.val == "" {
			continue
		}
		v, err := parseDuration(d.val)
		if err != nil {
			return Config{}, fmt.Errorf("simulator config: %s: %w", d.name, err)
		}
		*d.dst = v
	}
	if fc.RefreshTokens != nil {
		cfg.RefreshTokens = *fc.RefreshTokens
	}
	if fc.Lockout != nil {
		cfg.Lockout.Attempts = fc.Lockout.Attempts
		if fc.Lockout.Duration != "" {
			v, err := parseDuration(fc.Lockout.Duration)
			if err != nil {
				return Config{}, fmt.Errorf("simulator config: lockout.duration: %w", err)
			}
			cfg.Lockout.Duration = v
		}
	}
	if fc.RealmErrorStatus != 0 {
		cfg.RealmErrorStatus = fc.RealmErrorStatus
	}
	// Check the result now, so that a bad file is reported as such rather
	// than by New; fill works on a copy and leaves cfg's zero values be.
	check := cfg
	if err := check.fill(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// parseDuration takes a Go duration ("90s", "8h") or a whole number of
// seconds, the unit API Connect's settings use.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var secs int64
	if _, err := fmt.Sscanf(s, "%d", &secs); err == nil && fmt.Sprint(secs) == s {
		return time.Duration(secs) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 90s or 8h, or whole seconds, got %q", s)
	}
	return d, nil
}

// fill completes a Config with defaults and checks it.
func (c *Config) fill() error {
	def := DefaultConfig()
	if c.TokenTTL == 0 {
		c.TokenTTL = def.TokenTTL
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = def.RefreshTTL
	}
	if c.APIKeyTTL == 0 {
		c.APIKeyTTL = def.APIKeyTTL
	}
	if c.RealmErrorStatus == 0 {
		c.RealmErrorStatus = def.RealmErrorStatus
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TokenTTL < 0 || c.RefreshTTL < 0 || c.APIKeyTTL < 0 {
		return fmt.Errorf("simulator config: lifetimes must be positive")
	}
	idps := make(map[string]bool)
	for _, p := range c.IdentityProviders {
		if p.Scope != "admin" && p.Scope != "provider" {
			return fmt.Errorf("simulator config: identity provider %q: scope must be admin or provider, got %q", p.Name, p.Scope)
		}
		idps[p.Realm()] = true
	}
	seen := make(map[string]bool)
	for _, u := range c.Users {
		if u.Username == "" || u.Password == "" || u.Realm == "" {
			return fmt.Errorf("simulator config: user %q: username, password and realm are required", u.Username)
		}
		if !idps[u.Realm] {
			return fmt.Errorf("simulator config: user %q: realm %q has no identity provider", u.Username, u.Realm)
		}
		k := u.Realm + "\x00" + u.Username
		if seen[k] {
			return fmt.Errorf("simulator config: user %q appears twice in realm %q", u.Username, u.Realm)
		}
		seen[k] = true
	}
	ids := make(map[string]bool)
	for _, r := range c.Registrations {
		if r.ClientID == "" || r.ClientSecret == "" {
			return fmt.Errorf("simulator config: registration %q: client_id and client_secret are required", r.Name)
		}
		if ids[r.ClientID] {
			return fmt.Errorf("simulator config: client_id %q appears twice", r.ClientID)
		}
		ids[r.ClientID] = true
	}
	return nil
}
