// Package shared keeps one API Connect session for a fleet of proxies that
// use the same identity, in a Caddy storage module (certmagic.Storage with
// its Locker): Redis through caddy-storage-redis across machines, the
// file_system storage on one machine. It holds the record and its
// encryption, and bounds every storage call; who logs in and when is the
// session package's.
//
// The record is stored under a key derived from the identity alone (the
// server, realm, user or "api_key", client id and scope, hashed), never
// from a secret. Its content is sealed with AES-256-GCM under a key
// derived with argon2id from the password or API key and the client
// secret, salted with the identity's hash and mixed, when one is
// configured, with extra key material by HKDF: a dump of the storage is useless without the secrets,
// and a proxy with other credentials can neither read the record nor
// replace it while it holds anything usable.
package shared

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// Identity names the API Connect session a fleet shares: the proxies with
// the same Identity (and the same secrets) share one record.
type Identity struct {
	// Server is the platform API's base URL.
	Server string
	// Realm and User name the user of the password grant; both are empty
	// with an API key.
	Realm, User string
	// APIKey is set for the api_key grant: the key stands in for the user.
	APIKey bool
	// ClientID is the registration's.
	ClientID string
	// Scope is the scope the proxies ask for: proxies that ask for other
	// scopes hold other tokens, in records of their own. The same set in
	// another order, or with duplicates, is the same scope. Empty: the
	// registration's scopes.
	Scope []string
}

// Hash is a hex SHA-256 of the identity: what names its record and salts
// its key. It holds no secret. An identity without a scope hashes as it
// did before scopes were part of it, so that a fleet keeps its record.
func (id Identity) Hash() string {
	user := id.Realm + "\x00" + id.User
	if id.APIKey {
		user = "api_key"
	}
	parts := []string{"apic-auth-proxy shared session", strings.TrimSuffix(id.Server, "/"), user, id.ClientID}
	if scope := apic.CanonicalScopes(id.Scope); len(scope) > 0 {
		parts = append(parts, "scope", strings.Join(scope, " "))
	}
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Secrets are what the record's key is derived from.
type Secrets struct {
	// Credential is the password, or the API key.
	Credential string
	// ClientSecret is the registration's secret.
	ClientSecret string
	// Key is extra key material (shared_session's key), or "".
	Key string
}

// Record is the session a fleet shares. A zero Generation is no session.
type Record struct {
	// Generation counts the tokens obtained for the fleet: each login or
	// refresh by a lock holder stores Generation+1, and a newer
	// generation always wins.
	Generation uint64 `json:"generation"`
	// AccessToken and RefreshToken are the tokens; RefreshToken is ""
	// when the server issues none.
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// Expiry and RefreshExpiry are when they expire; RefreshExpiry is zero
	// when unknown.
	Expiry        time.Time `json:"expiry,omitzero"`
	RefreshExpiry time.Time `json:"refresh_expiry,omitzero"`
	// Grant is the grant that obtained the access token.
	Grant string `json:"grant,omitempty"`
	// Obtained is when the token arrived.
	Obtained time.Time `json:"obtained,omitzero"`
	// WrittenBy names the proxy that stored the record (host/pid), and
	// WrittenAt when.
	WrittenBy string    `json:"written_by,omitempty"`
	WrittenAt time.Time `json:"written_at,omitzero"`
	// RefusedUntil is set when the server refused the credentials (or
	// failed in another lasting way): no proxy of the fleet asks again
	// before it. RefusedCause names the failure, RefusedError describes
	// it, and Refusals counts the lasting failures in a row, which double
	// the cool-down fleet-wide.
	RefusedUntil time.Time `json:"refused_until,omitzero"`
	RefusedCause string    `json:"refused_cause,omitempty"`
	RefusedError string    `json:"refused_error,omitempty"`
	Refusals     int       `json:"refusals,omitempty"`
}

// Lasts is when nothing in the record is usable any more: the latest of
// the access token's expiry, the refresh token's and the refusal's end.
// A refresh token of unknown lifetime counts as lasting a day past the
// access token.
func (r *Record) Lasts() time.Time {
	end := r.Expiry
	if r.RefreshToken != "" {
		re := r.RefreshExpiry
		if re.IsZero() {
			re = r.Expiry.Add(24 * time.Hour)
		}
		end = later(end, re)
	}
	return later(end, r.RefusedUntil)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ErrUnreadable is the error of a record that does not open with this
// proxy's key: written with other credentials (or other key material),
// or altered.
var ErrUnreadable = errors.New("the shared session record does not open with this proxy's credentials (written with other credentials or key, or altered)")

// envelope is the stored form of a record: its expiry in clear, so that a
// record nobody can use any more may be replaced, and the sealed record.
// The clear fields are authenticated with it.
type envelope struct {
	Version int       `json:"v"`
	Lasts   time.Time `json:"lasts"`
	Nonce   []byte    `json:"nonce"`
	Sealed  []byte    `json:"sealed"`
}

const envelopeVersion = 1

// Argon2id parameters: OWASP's first recommended configuration (46 MiB,
// one pass, one lane). A guess at the secrets from a copy of the record
// costs that memory and about 60 ms of CPU; a proxy pays it once per
// identity, at its start.
const (
	argonTime    = 1
	argonMemory  = 46 << 10 // KiB
	argonThreads = 1
)

// sealer seals and opens the records of one identity.
type sealer struct {
	aead cipher.AEAD
	hash string
}

// newSealer derives the record key of an identity from its secrets.
func newSealer(idHash string, sec Secrets) (*sealer, error) {
	salt, err := hex.DecodeString(idHash)
	if err != nil {
		return nil, fmt.Errorf("identity hash: %v", err)
	}
	pass := []byte(sec.Credential + "\x00" + sec.ClientSecret)
	base := argon2.IDKey(pass, salt, argonTime, argonMemory, argonThreads, 32)
	key, err := hkdf.Key(sha256.New, base, []byte(sec.Key), "apic-auth-proxy shared session record", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, hash: idHash}, nil
}

// additional is the data authenticated with a record besides its content.
func (s *sealer) additional(e *envelope) []byte {
	return fmt.Appendf(nil, "v%d\x00%s\x00%s", e.Version, s.hash, e.Lasts.UTC().Format(time.RFC3339Nano))
}

func (s *sealer) seal(r *Record) ([]byte, error) {
	plain, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	e := &envelope{Version: envelopeVersion, Lasts: r.Lasts().UTC(), Nonce: make([]byte, s.aead.NonceSize())}
	if _, err := rand.Read(e.Nonce); err != nil {
		return nil, err
	}
	e.Sealed = s.aead.Seal(nil, e.Nonce, plain, s.additional(e))
	return json.Marshal(e)
}

// open opens a stored record. A record that does not open returns its
// clear expiry with ErrUnreadable.
func (s *sealer) open(data []byte) (*Record, time.Time, error) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil || e.Version != envelopeVersion || len(e.Nonce) != s.aead.NonceSize() {
		return nil, time.Time{}, ErrUnreadable
	}
	plain, err := s.aead.Open(nil, e.Nonce, e.Sealed, s.additional(&e))
	if err != nil {
		return nil, e.Lasts, ErrUnreadable
	}
	var r Record
	if err := json.Unmarshal(plain, &r); err != nil {
		return nil, e.Lasts, ErrUnreadable
	}
	return &r, e.Lasts, nil
}
