package main

import (
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/caddymodule"
)

// reloadOnHangup makes the run command reload, on SIGHUP, the config file
// it was started with, as run --watch does when the file changes. Caddy's
// own signal trap logs "not implemented" for SIGHUP; the first SIGHUP
// takes the signal from it, so that later ones are this reload alone.
func reloadOnHangup(run *cobra.Command) {
	runE := run.RunE
	run.RunE = func(cmd *cobra.Command, args []string) error {
		fl := caddycmd.Flags{FlagSet: cmd.Flags()}
		src := configSource{file: fl.String("config"), adapter: fl.String("adapter")}
		if fl.Bool("resume") {
			if _, err := os.Stat(caddy.ConfigAutosavePath); err == nil {
				src.resumed = true // run ignores --config then
			}
		}
		if src.file == "" && src.adapter == "" {
			if _, err := os.Stat("Caddyfile"); err == nil {
				src.file = "Caddyfile" // as caddycmd.LoadConfig finds it
			}
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			first := true
			for range hup {
				if first {
					signal.Ignore(syscall.SIGHUP) // drops every handler, Caddy's too
					signal.Notify(hup, syscall.SIGHUP)
					first = false
				}
				src.reload()
			}
		}()
		return runE(cmd, args)
	}
}

// configSource is where run took its config from.
type configSource struct {
	file, adapter string
	resumed       bool // from the autosaved config (--resume)
}

// reload loads and runs the config file again, keeping the running config
// when the file does not load. It forces the reload, so that {env.*} and
// {file.*} placeholders are read again even when the file is unchanged.
func (s configSource) reload() {
	logger := caddy.Log().With(zap.String("signal", "SIGHUP"))
	switch {
	case s.resumed:
		logger.Info("running the autosaved config (--resume): no config file to reload; ignored SIGHUP")
		return
	case s.file == "":
		logger.Info("started without a config file: nothing to reload; ignored SIGHUP")
		return
	case s.file == "-":
		logger.Info("started with the config from standard input: nothing to reload; ignored SIGHUP")
		return
	}
	logger = logger.With(zap.String("file", s.file))
	logger.Info("reloading config from file")
	cfg, _, _, err := caddycmd.LoadConfig(s.file, s.adapter)
	if err == nil {
		err = caddy.Load(cfg, true)
	}
	if err != nil {
		logger.Error("reloading config failed; the running config stays", zap.String("error", strings.ReplaceAll(caddymodule.ErrorMessage(err), "\n", "; ")))
		return
	}
	caddy.Log().Info("reloaded config from file", zap.String("signal", "SIGHUP"), zap.String("file", s.file))
}
