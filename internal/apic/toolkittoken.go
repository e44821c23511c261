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
// The entries of other servers are kept as they are. The file is replaced
// atomically with mode 0600; a missing directory is made with mode 0700.
// A file that is not such a mapping is left alone and reported.
func WriteToolkitToken(path, server, accessToken, refreshToken string) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	inner, err := yaml.Marshal(struct {
		AccessToken  string `yaml:"access_token"`
		RefreshToken string `yaml:"refresh_token"`
	}{accessToken, refreshToken})
	if err != nil {
		return fmt.Errorf("encoding the token entry: %v", err)
	}
	var doc yaml.Node
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading the token file: %v", err)
	case len(bytes.TrimSpace(data)) > 0:
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("%s is not YAML (%v): move it aside or name another file", path, err)
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s is not a mapping of <server>/api entries: move it aside or name another file", path)
	}
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
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encoding the token file: %v", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding the token file: %v", err)
	}
	return writeFileAtomic(path, buf.Bytes())
}

// writeFileAtomic writes data to a new file next to path with mode 0600
// and renames it over path, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
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
