package apic

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ToolkitTokenKey is the key of a server's entry in the apic toolkit's
// token file: the server's base URL with /api.
func ToolkitTokenKey(server string) string {
	return strings.TrimSuffix(server, "/") + "/api"
}

// ToolkitTokenFile is the apic toolkit's token file under home:
// <home>/.apiconnect/token.
func ToolkitTokenFile(home string) string {
	return filepath.Join(home, ".apiconnect", "token")
}

// WriteToolkitToken stores a token for server in the apic toolkit's token
// file (~/.apiconnect/token), as `apic login` leaves it: a YAML mapping
// keyed by <server>/api whose values are literal blocks of YAML,
//
//	https://apim.example.com/api: |
//	  access_token: eyJ...
//	  refresh_token: ""
//
// The entries of other servers are kept as they are. A symbolic link is
// followed. The file is replaced atomically with mode 0600; a missing
// directory is made with mode 0700. A file that is not such a mapping is
// left alone and reported.
func WriteToolkitToken(path, server, accessToken, refreshToken string) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading the token file: %v", err)
	}
	tt, err := ParseToolkitTokens(path, data)
	if err != nil {
		return err
	}
	if err := tt.Set(server, accessToken, refreshToken); err != nil {
		return err
	}
	out, err := tt.Bytes()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, out)
}

// ToolkitTokens is the content of an apic toolkit token file (see
// WriteToolkitToken), comments and other servers' entries included.
type ToolkitTokens struct {
	doc yaml.Node
}

// toolkitEntry is the YAML block of one server's entry.
type toolkitEntry struct {
	AccessToken  string `yaml:"access_token"`
	RefreshToken string `yaml:"refresh_token"`
}

// ParseToolkitTokens parses the content of a token file; empty data (a
// missing file) holds no entry. name names the file in errors, which never
// quote its content.
func ParseToolkitTokens(name string, data []byte) (*ToolkitTokens, error) {
	tt := &ToolkitTokens{}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &tt.doc); err != nil {
			return nil, fmt.Errorf("%s is not YAML (%s): move it aside or name another file", name, yamlErrorWithoutText(err))
		}
	}
	if tt.doc.Kind == 0 {
		tt.doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if tt.root().Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s is not a mapping of <server>/api entries: move it aside or name another file", name)
	}
	return tt, nil
}

func (tt *ToolkitTokens) root() *yaml.Node { return tt.doc.Content[0] }

// Set sets server's entry, replacing any it had.
func (tt *ToolkitTokens) Set(server, accessToken, refreshToken string) error {
	inner, err := yaml.Marshal(toolkitEntry{accessToken, refreshToken})
	if err != nil {
		return fmt.Errorf("encoding the token entry: %v", err)
	}
	root := tt.root()
	key := ToolkitTokenKey(server)
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.LiteralStyle, Value: string(inner)}
	found := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			root.Content[i+1] = value
			found = true
		}
	}
	if !found {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, value)
	}
	return nil
}

// AccessToken returns the access token of server's entry: "" when there
// is none, or it is not a block of YAML.
func (tt *ToolkitTokens) AccessToken(server string) string {
	root := tt.root()
	key := ToolkitTokenKey(server)
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != key {
			continue
		}
		var e toolkitEntry
		if err := yaml.Unmarshal([]byte(root.Content[i+1].Value), &e); err == nil {
			return e.AccessToken
		}
	}
	return ""
}

// Remove removes server's entry, keeping the others; it reports whether
// there was one.
func (tt *ToolkitTokens) Remove(server string) bool {
	root := tt.root()
	key := ToolkitTokenKey(server)
	kept := root.Content[:0]
	removed := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			removed = true
			continue
		}
		kept = append(kept, root.Content[i], root.Content[i+1])
	}
	root.Content = kept
	return removed
}

// Len is the number of entries.
func (tt *ToolkitTokens) Len() int { return len(tt.root().Content) / 2 }

// Bytes encodes the file.
func (tt *ToolkitTokens) Bytes() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&tt.doc); err != nil {
		return nil, fmt.Errorf("encoding the token file: %v", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding the token file: %v", err)
	}
	return buf.Bytes(), nil
}

// WriteFileAtomic writes data to a new file next to path with mode 0600
// and renames it over path, so that a reader never sees half a file and
// the file is a new one, whatever the mode of the one it replaces. A
// symbolic link at path is replaced, not followed. A missing directory is
// made with mode 0700.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making the directory of the token file: %v", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing the token file: %v", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("writing the token file: %v", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing the token file: %v", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing the token file: %v", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the token file: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the token file: %v", err)
	}
	ok = true
	return nil
}
