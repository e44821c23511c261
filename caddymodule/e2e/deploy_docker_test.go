package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDockerExample validates deploy/docker/Caddyfile with the binary, in
// the environment that deploy/docker/apic.env.example names: it listens on
// every interface of the container (the host publishes it on its
// loopback), names allowed_hosts, keeps the admin API on a unix socket,
// and reads every secret from the environment at load; the example holds
// names only, and every name the Caddyfile reads.
func TestDockerExample(t *testing.T) {
	t.Parallel()
	var names []string
	for line := range strings.Lines(string(deployFile(t, "docker/apic.env.example"))) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !regexp.MustCompile(`^APIC_[A-Z_]+$`).MatchString(line) {
			t.Errorf("apic.env.example: %q is not a variable's name alone", line)
		}
		names = append(names, line)
	}
	file, err := filepath.Abs(filepath.Join("..", "..", "deploy", "docker", "Caddyfile"))
	mustDo(t, err)
	text := string(deployFile(t, "docker/Caddyfile"))
	for _, m := range regexp.MustCompile(`\{(?:env\.|\$)([A-Z_]+)`).FindAllStringSubmatch(text, -1) {
		if !slices.Contains(names, m[1]) {
			t.Errorf("the Caddyfile reads %s, which apic.env.example does not name", m[1])
		}
	}

	env := []string{"HOME=" + t.TempDir(), "APIC_SERVER=https://apim.example.com", "APIC_REALM=" + "provider/default-idp-2"}
	for _, n := range names {
		if n != "APIC_SERVER" && n != "APIC_REALM" {
			env = append(env, n+"=docker-example-"+strings.ToLower(n))
		}
	}
	validate := exec.Command(binary(t), "validate", "--config", file)
	validate.Env = env
	if c := run(t, validate); c.code != 0 || !strings.Contains(c.stdout+c.stderr, "Valid configuration") {
		t.Fatalf("validate: exit status %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	adapt := exec.Command(binary(t), "adapt", "--config", file)
	adapt.Env = env
	c := run(t, adapt)
	if c.code != 0 {
		t.Fatalf("adapt: exit status %d\n%s", c.code, c.stderr)
	}
	if strings.Contains(c.stdout, "docker-example-") {
		t.Errorf("the adapted config holds a secret:\n%s", c.stdout)
	}
	var cfg struct {
		Admin struct{ Listen string }
		Apps  struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string
					Routes []struct {
						Handle []struct {
							Handler      string
							AllowedHosts []string `json:"allowed_hosts"`
						}
					}
				}
			}
		}
	}
	mustDo(t, json.Unmarshal([]byte(c.stdout), &cfg))
	if !strings.HasPrefix(cfg.Admin.Listen, "unix/") || !strings.HasSuffix(cfg.Admin.Listen, "|0600") {
		t.Errorf("the admin API listens on %q, want a unix socket of mode 0600", cfg.Admin.Listen)
	}
	var listen, hosts []string
	for _, s := range cfg.Apps.HTTP.Servers {
		listen = append(listen, s.Listen...)
		for _, r := range s.Routes {
			for _, h := range r.Handle {
				if h.Handler == "apic_auth" {
					hosts = append(hosts, h.AllowedHosts...)
				}
			}
		}
	}
	if !slices.Equal(listen, []string{":9080"}) || len(hosts) == 0 {
		t.Errorf("servers listen on %q with allowed_hosts %q, want :9080 (every interface of the container) and allowed_hosts", listen, hosts)
	}
	if !strings.Contains(text, "-p 127.0.0.1:9080:9080") {
		t.Error("the Caddyfile does not say to publish the port on the host's loopback only")
	}
}
