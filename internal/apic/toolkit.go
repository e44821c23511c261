package apic

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// ToolkitCredentials are the toolkit registration's settings from the
// credentials.json that API Manager's "Download toolkit" (or
// GET /api/cloud/settings/toolkit-credentials) gives:
//
//	{"cloud_id": "...", "toolkit": {"endpoint": "https://host/api",
//	 "client_id": "...", "client_secret": "..."}, "consumer_toolkit": {...}}
type ToolkitCredentials struct {
	// Server is the toolkit endpoint without its trailing /api.
	Server       string
	ClientID     string
	ClientSecret string
}

// LoadToolkitCredentials reads a toolkit credentials.json.
func LoadToolkitCredentials(path string) (ToolkitCredentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ToolkitCredentials{}, fmt.Errorf("credentials: %v", err)
	}
	c, err := ParseToolkitCredentials(data)
	if err != nil {
		return ToolkitCredentials{}, fmt.Errorf("credentials %s: %v", path, err)
	}
	return c, nil
}

// ParseToolkitCredentials reads the toolkit section of a credentials.json.
// Errors name the missing or wrong field, never a value.
func ParseToolkitCredentials(data []byte) (ToolkitCredentials, error) {
	var doc struct {
		Toolkit *struct {
			Endpoint     string `json:"endpoint"`
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		} `json:"toolkit"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return ToolkitCredentials{}, fmt.Errorf("not a toolkit credentials.json: the file is not a JSON object")
	}
	t := doc.Toolkit
	if t == nil {
		return ToolkitCredentials{}, fmt.Errorf("not a toolkit credentials.json: no \"toolkit\" section")
	}
	var missing []string
	for _, f := range []struct{ name, val string }{
		{"toolkit.endpoint", t.Endpoint}, {"toolkit.client_id", t.ClientID}, {"toolkit.client_secret", t.ClientSecret},
	} {
		if f.val == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return ToolkitCredentials{}, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	server := strings.TrimSuffix(strings.TrimSuffix(t.Endpoint, "/"), "/api")
	if err := CheckServer(server); err != nil {
		return ToolkitCredentials{}, fmt.Errorf("toolkit.endpoint: %v", err)
	}
	return ToolkitCredentials{Server: server, ClientID: t.ClientID, ClientSecret: t.ClientSecret}, nil
}
