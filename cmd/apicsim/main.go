// Command apicsim runs a simulated IBM API Connect management server on
// loopback, for trying apic-auth-proxy and for black-box tests.
//
//	go run ./cmd/apicsim                      # http://127.0.0.1:2000
//	go run ./cmd/apicsim -tls -ca-out ca.pem  # https, CA written to ca.pem
//
// Built-in users: admin / 7iron-hide (realm admin/default-idp-1) and
// developer / Passw0rd! (realm provider/default-idp-2); registration
// clientID / clientPassword. Controls are under /_sim/ (see package
// apicsim).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/conformance"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], log.Default(), nil)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "apicsim:", err)
		os.Exit(1)
	}
}

// run parses the flags, starts the simulator and serves until ctx is done,
// logging to logger. ready, when not nil, is called with the address once
// the server listens.
func run(ctx context.Context, args []string, logger *log.Logger, ready func(net.Addr)) error {
	fs := flag.NewFlagSet("apicsim", flag.ContinueOnError)
	fs.SetOutput(logger.Writer())
	var (
		listen        = fs.String("listen", "127.0.0.1:2000", "address to listen on")
		useTLS        = fs.Bool("tls", false, "serve HTTPS with a generated certificate")
		caOut         = fs.String("ca-out", "apicsim-ca.pem", "with -tls: file to write the certificate authority to")
		tlsHosts      = fs.String("tls-hosts", "localhost,127.0.0.1,::1", "with -tls: comma-separated names and addresses the certificate is valid for")
		tokenTTL      = fs.Duration("token-ttl", 0, "access token lifetime (default 8h, the cloud setting's 28800 s)")
		refreshTokens = fs.Bool("refresh-tokens", false, "issue refresh tokens (off by default, as on a real server)")
		refreshTTL    = fs.Duration("refresh-ttl", 0, "refresh token lifetime (default 16h)")
		configFile    = fs.String("config", "", "YAML file of users, registrations and settings")
		quiet         = fs.Bool("quiet", false, "do not log each request")
		conform       = fs.Bool("conformance", false, "check every answer against IBM's Provider API document (restated in internal/apicsim/conformance); mismatches are logged and served at GET /_sim/conformance")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: apicsim [flags]

Runs a simulated IBM API Connect management server on loopback.
Users: %s / %s (realm %s), %s / %s (realm %s);
client id %s, secret %s. Controls are under /_sim/.

Flags:
`, apicsim.DefaultAdminUsername, apicsim.DefaultAdminPassword, apicsim.DefaultAdminRealm,
			apicsim.DefaultProviderUsername, apicsim.DefaultProviderPassword, apicsim.DefaultProviderRealm,
			apicsim.DefaultClientID, apicsim.DefaultClientSecret)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // the usage is printed
	} else if err != nil {
		return err
	}
	cfg := apicsim.DefaultConfig()
	if *configFile != "" {
		var err error
		if cfg, err = apicsim.LoadConfigFile(*configFile); err != nil {
			return err
		}
	}
	if *tokenTTL != 0 {
		cfg.TokenTTL = *tokenTTL
	}
	if *refreshTTL != 0 {
		cfg.RefreshTTL = *refreshTTL
	}
	if *refreshTokens {
		cfg.RefreshTokens = true
	}
	sim, err := apicsim.New(cfg)
	if err != nil {
		return err
	}
	var h http.Handler = sim
	if *conform {
		if h, err = conformanceCheck(logger, sim); err != nil {
			return err
		}
	}
	if !*quiet {
		h = logRequests(logger, h)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	scheme := "http"
	if *useTLS {
		certs, err := apicsim.NewCertificates(strings.Split(*tlsHosts, ",")...)
		if err != nil {
			_ = ln.Close()
			return err
		}
		if err := os.WriteFile(*caOut, certs.CAPEM, 0o644); err != nil {
			_ = ln.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{certs.Server}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
		logger.Printf("certificate authority written to %s", *caOut)
	}
	logger.Printf("API Connect simulator on %s://%s (token TTL %s, refresh tokens %v)", scheme, ln.Addr(), cfg.TokenTTL, cfg.RefreshTokens)
	logger.Printf("users: %s (realm %s), %s (realm %s); client id %s",
		apicsim.DefaultAdminUsername, apicsim.DefaultAdminRealm,
		apicsim.DefaultProviderUsername, apicsim.DefaultProviderRealm, apicsim.DefaultClientID)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// conformanceCheck serves sim through a conformance checker that logs each
// mismatch, and answers GET /_sim/conformance with the checker's report.
func conformanceCheck(logger *log.Logger, sim http.Handler) (http.Handler, error) {
	c, err := conformance.Load()
	if err != nil {
		return nil, err
	}
	c.OnMismatch(func(m conformance.Mismatch) { logger.Printf("conformance: %s", m) })
	checked := c.Wrap(sim)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_sim/conformance" {
			checked.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, `{"status":405,"message":["use GET"]}`, http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Report())
	}), nil
}

// logRequests logs one line per request: method, path, status, bytes and
// duration. Headers and bodies, which carry secrets, are never logged.
func logRequests(logger *log.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lw := &logWriter{ResponseWriter: w}
		next.ServeHTTP(lw, r)
		status := lw.status
		if status == 0 {
			status = http.StatusOK
		}
		logger.Printf("%s %s %d %dB %s", r.Method, r.URL.Path, status, lw.bytes, time.Since(start).Round(time.Microsecond))
	})
}

type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
