package main

import (
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// TestCommandsRegistered checks that the binary has the quick start and
// the toolkit's commands, with their help.
func TestCommandsRegistered(t *testing.T) {
	cmds := caddycmd.Commands()
	for _, name := range []string{"apic-proxy", "apic-token", "apic-register", "apic-realms"} {
		c, ok := cmds[name]
		if !ok {
			t.Errorf("command %s is not registered", name)
			continue
		}
		if c.Short == "" || c.Long == "" || c.CobraFunc == nil {
			t.Errorf("command %s lacks its help or its function", name)
		}
	}
}

// TestChoresShareTheLoginFlags checks that the commands that log in have
// apic-proxy's flags with the same help, and that none takes a secret as
// a flag value.
func TestChoresShareTheLoginFlags(t *testing.T) {
	flags := func(name string) *cobra.Command {
		cmd := &cobra.Command{Use: name}
		caddycmd.Commands()[name].CobraFunc(cmd)
		return cmd
	}
	proxy := flags("apic-proxy")
	for _, name := range []string{"apic-token", "apic-register"} {
		cmd := flags(name)
		for _, f := range []string{"to", "realm", "username", "client-id", "password-file", "client-secret-file", "api-key-file", "insecure", "ca-cert"} {
			pf, cf := proxy.Flags().Lookup(f), cmd.Flags().Lookup(f)
			if cf == nil || cf.Usage != pf.Usage {
				t.Errorf("%s --%s: %v, want apic-proxy's", name, f, cf)
			}
		}
		for _, f := range []string{"credentials", "server", "timeout"} {
			if cmd.Flags().Lookup(f) == nil {
				t.Errorf("%s has no --%s", name, f)
			}
		}
	}
	for _, name := range []string{"apic-proxy", "apic-token", "apic-register", "apic-realms"} {
		for _, f := range []string{"password", "client-secret", "api-key", "test-password"} {
			if flags(name).Flags().Lookup(f) != nil {
				t.Errorf("%s takes the secret --%s as a flag value", name, f)
			}
		}
	}
	if got := flags("apic-register").Flags().Lookup("realm").DefValue; got != "admin/default-idp-1" {
		t.Errorf("apic-register's default realm %q, want %s", got, "admin/default-idp-1")
	}
	if got := flags("apic-token").Flags().Lookup("realm").DefValue; got != "provider/default-idp-2" {
		t.Errorf("apic-token's default realm %q, want %s", got, "provider/default-idp-2")
	}
}
