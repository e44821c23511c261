package apic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// RegistrationDocument is a registration to create, read from the YAML
// (or JSON) document that `apic registrations:create` takes:
//
//	type: registration
//	api_version: 2.0.0
//	name: apic-auth-proxy-ci
//	title: apic-auth-proxy CI
//	client_type: toolkit
//	client_id: apic-auth-proxy-ci
//	client_secret: a-long-random-secret
//	scopes: [cloud:view, cloud:manage, ...]
//
// The read-only fields (type, api_version, id, url, created_at,
// updated_at) are accepted and not sent; every other field is sent as
// given, for the server to judge. Its String and GoString never show the
// client secret.
type RegistrationDocument struct {
	Name     string
	ClientID string

	clientSecret string
	fields       map[string]any // what is sent
}

// ClientSecret is the client secret the document gives the registration.
func (d RegistrationDocument) ClientSecret() string { return d.clientSecret }

func (d RegistrationDocument) String() string {
	return fmt.Sprintf("registration %s (client id %s)", d.Name, d.ClientID)
}

// GoString keeps %#v from printing the secret.
func (d RegistrationDocument) GoString() string { return d.String() }

// readOnlyFields are a registration's fields that the server sets itself
// and ignores on input.
var readOnlyFields = map[string]bool{
	"type": true, "api_version": true, "id": true, "url": true, "created_at": true, "updated_at": true,
}

// stringFields are the document's fields that must be strings.
var stringFields = map[string]bool{
	"name": true, "title": true, "summary": true, "state": true,
	"client_type": true, "client_id": true, "client_secret": true,
}

// MaxRegistrationDocument bounds the size of a registration document.
const MaxRegistrationDocument = 1 << 20

// ParseRegistrationDocument reads a registration document in YAML or JSON.
// name, client_id and client_secret are required: the caller proves the
// new client id and secret, and a secret the server made up would be
// shown only once. Errors name the field and what was expected, never a
// value.
func ParseRegistrationDocument(data []byte) (*RegistrationDocument, error) {
	if len(data) > MaxRegistrationDocument {
		return nil, fmt.Errorf("the document is larger than %d bytes", MaxRegistrationDocument)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the document is empty")
		}
		return nil, fmt.Errorf("not YAML or JSON: %s", yamlErrorWithoutText(err))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("want one registration document, found more than one (or trailing text)")
	}
	m := &root
	if m.Kind == yaml.DocumentNode && len(m.Content) == 1 {
		m = m.Content[0]
	}
	if m.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping of registration fields (name, client_id, client_secret, scopes, ...)")
	}
	d := &RegistrationDocument{fields: map[string]any{}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: want field names that are plain strings", k.Line)
		}
		name := k.Value
		if seen[name] {
			return nil, fmt.Errorf("%s: the field appears twice (line %d)", name, k.Line)
		}
		seen[name] = true
		switch {
		case name == "type":
			if v.Kind != yaml.ScalarNode || v.Value != "registration" {
				return nil, fmt.Errorf("type: want registration, got %q (line %d)", shorten(v.Value, 40), v.Line)
			}
		case readOnlyFields[name]:
			// Set by the server; ignored on input, so not sent.
		case stringFields[name]:
			if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				return nil, fmt.Errorf("%s: want a string (line %d)", name, v.Line)
			}
			d.fields[name] = v.Value
		case name == "scopes":
			if v.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("scopes: want a list of scope names such as cloud:view (line %d)", v.Line)
			}
			scopes := make([]string, 0, len(v.Content))
			for _, s := range v.Content {
				if s.Kind != yaml.ScalarNode || s.Tag == "!!null" || s.Value == "" {
					return nil, fmt.Errorf("scopes: want a list of scope names such as cloud:view, line %d is not one", s.Line)
				}
				scopes = append(scopes, s.Value)
			}
			d.fields[name] = scopes
		default:
			var val any
			if err := v.Decode(&val); err != nil {
				return nil, fmt.Errorf("%s: unreadable value (line %d)", name, v.Line)
			}
			if _, err := json.Marshal(val); err != nil {
				return nil, fmt.Errorf("%s: want a value JSON can carry (string keys only) (line %d)", name, v.Line)
			}
			d.fields[name] = val
		}
	}
	d.Name, _ = d.fields["name"].(string)
	d.ClientID, _ = d.fields["client_id"].(string)
	d.clientSecret, _ = d.fields["client_secret"].(string)
	var missing []string
	for _, f := range []struct{ name, val string }{{"name", d.Name}, {"client_id", d.ClientID}, {"client_secret", d.clientSecret}} {
		if strings.TrimSpace(f.val) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s: the document names the registration and the client id and secret it gets", strings.Join(missing, ", "))
	}
	if st, ok := d.fields["state"].(string); ok && st != "enabled" && st != "disabled" {
		return nil, fmt.Errorf("state: want enabled or disabled, got %q", shorten(st, 40))
	}
	return d, nil
}

// body is the JSON the server is sent.
func (d *RegistrationDocument) body() ([]byte, error) {
	b, err := json.Marshal(d.fields)
	if err != nil {
		return nil, fmt.Errorf("registration %s: cannot encode the document as JSON", d.Name)
	}
	return b, nil
}

// quotedText is what YAML errors quote of the document: anchor names,
// scalars.
var quotedText = regexp.MustCompile("'[^']*'|`[^`]*`")

// yamlErrorWithoutText returns a YAML error's message with what it quotes
// of the document left out: that text may be a secret.
func yamlErrorWithoutText(err error) string {
	return quotedText.ReplaceAllString(err.Error(), "…")
}
