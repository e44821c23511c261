package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/apic-tools/apic-auth-proxy/caddymodule"
)

const binaryName = "apic-auth-proxy"

const description = `apic-auth-proxy is a local authenticating reverse proxy for the IBM API
Connect platform (management) REST API: it logs in to API Manager with a
client registration and a user or API key, keeps the bearer token fresh,
and adds it to every request it forwards, so that curl, scripts and tools
on this machine call the API without handling a token. It is Caddy with
the apic_auth handler: "apic-auth-proxy apic-proxy" starts the proxy from
flags, "apic-auth-proxy run --config Caddyfile" runs a Caddyfile that uses
apic_auth, and the toolkit's commands log in, register a client or list
realms once. See https://github.com/apic-tools/apic-auth-proxy.`

// ownCommands are this program's commands, listed first in the help and in
// this order, when registered.
var ownCommands = []string{"apic-proxy", "apic-token", "apic-register", "apic-realms", "status", "version"}

// caddyFirst are Caddy's commands for running a config, listed first of
// Caddy's, in this order; the others follow by name.
var caddyFirst = []string{"run", "start", "stop", "reload", "validate", "adapt", "fmt"}

// caddyRank orders Caddy's commands in the help.
func caddyRank(name string) int {
	if i := slices.Index(caddyFirst, name); i >= 0 {
		return i
	}
	return len(caddyFirst)
}

// removedCommands would download a stock Caddy over this binary.
var removedCommands = []string{"upgrade", "add-package", "remove-package"}

// execute runs the command line args and returns the exit status.
func execute(args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	// Caddy's commands log their error themselves; an apic_auth config
	// error is repeated here without Caddy's chain of module loads.
	if msg := caddymodule.ErrorMessage(err); msg != err.Error() {
		fmt.Fprintln(os.Stderr, "Error: "+msg)
	}
	return exitStatus(err)
}

// newRootCommand builds the command line from the registered commands:
// this program's first, then Caddy's, without the ones in removedCommands,
// with this program's version command.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:  binaryName,
		Long: description,
		Example: `  $ apic-auth-proxy apic-proxy --demo
  $ apic-auth-proxy apic-proxy --to https://apim.example.com --username me
  $ apic-auth-proxy run --config Caddyfile
  $ apic-auth-proxy validate --config Caddyfile`,
		SilenceUsage: true,
		Version:      versionLine(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddGroup(
		&cobra.Group{ID: "apic", Title: "Commands:"},
		&cobra.Group{ID: "caddy", Title: "Caddy's commands:"},
	)
	root.SetHelpCommandGroupID("caddy")
	root.SetCompletionCommandGroupID("caddy")

	cmds := maps.Clone(caddycmd.Commands()) // Caddy's map itself
	cmds["version"] = versionCommand
	for _, name := range ownCommands {
		if c, ok := cmds[name]; ok {
			root.AddCommand(toCobra(c, "apic"))
		}
	}
	var rest []string
	for name := range cmds {
		if !slices.Contains(ownCommands, name) && !slices.Contains(removedCommands, name) {
			rest = append(rest, name)
		}
	}
	slices.SortFunc(rest, func(a, b string) int {
		return cmp.Or(cmp.Compare(caddyRank(a), caddyRank(b)), cmp.Compare(a, b))
	})
	for _, name := range rest {
		c := toCobra(cmds[name], "caddy")
		if name == "run" {
			reloadOnHangup(c)
		}
		root.AddCommand(c)
	}
	return root
}

func init() {
	// The groups list the commands in the order newRootCommand adds them.
	cobra.EnableCommandSorting = false
}

// toCobra makes the cobra command of c in group, as Caddy's own command
// line does.
func toCobra(c caddycmd.Command, group string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     c.Name + " " + c.Usage,
		Short:   c.Short,
		Long:    c.Long,
		GroupID: group,
	}
	if c.CobraFunc != nil {
		c.CobraFunc(cmd)
	} else {
		cmd.RunE = caddycmd.WrapCommandFuncForCobra(c.Func)
		if c.Flags != nil {
			cmd.Flags().AddGoFlagSet(c.Flags)
		}
	}
	return cmd
}

// exitStatus is the exit status for err: the one a Caddy command returned
// (caddycmd carries it in an unexported error type with an ExitCode
// field, which its Main reads), else 1.
func exitStatus(err error) int {
	v := reflect.ValueOf(err)
	if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
		if f := v.Elem().FieldByName("ExitCode"); f.IsValid() && f.CanInt() && f.Int() > 0 {
			return int(f.Int())
		}
	}
	return 1
}
