package caddymodule

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/replay"
)

// answerProxyError answers an error that the handlers after apic_auth
// returned (reverse_proxy's: API Manager unreachable, timing out, closing
// the connection during an upload) with API Connect's error body naming
// the cause, so that the client never gets Caddy's empty error response.
// It does so only while no response has been written, and returns nil
// after logging the error as Caddy would (Error for a 5xx, Debug for a
// 4xx). It returns err unchanged when the client has gone (Caddy logs
// that 499 at Debug) and when the site has handle_errors routes, which
// answer as their author wrote them.
func (h *Handler) answerProxyError(rw *replay.Writer, r *http.Request, err error) error {
	if err == nil || rw.Status() != 0 || r.Context().Err() != nil || hasErrorRoutes(r) {
		return err
	}
	status := http.StatusInternalServerError // Caddy's status for an error of no status
	var cause error = err
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		status, cause = he.StatusCode, he.Err
	}
	if status < 400 || status == statusClientClosedRequest {
		return err
	}
	msg := h.proxyErrorMessage(status, cause)
	level := zapcore.DebugLevel
	if status >= 500 {
		level = zapcore.ErrorLevel
	}
	if ce := h.logger.Check(level, "proxying failed; answered with API Connect's error body"); ce != nil {
		ce.Write(zap.String("identity", h.id.name), zap.Int("status", status), zap.String("message", msg),
			zap.String("error", h.id.scrub.Scrub(err.Error())),
			zap.String("method", r.Method), zap.String("host", r.Host), zap.String("uri", r.RequestURI))
	}
	// A failure after the upstream's headers were set but before they
	// were sent leaves headers that describe another body.
	hdr := rw.Header()
	for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range", "Etag", "Last-Modified", "Location", "Content-Location"} {
		delete(hdr, k)
	}
	writeAPIError(rw, status, msg)
	return nil
}

// proxyErrorMessage says what went wrong in words for the client: for a
// 502, 503 or 504, API Manager's host (as the server setting names it)
// and the cause, never an address it was resolved to nor a raw error;
// for any other status, its text.
func (h *Handler) proxyErrorMessage(status int, cause error) string {
	var phrase string
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		_, phrase = apic.TransportCause(cause)
	case http.StatusGatewayTimeout:
		phrase = "did not answer in time"
	default:
		return "apic_auth: the request could not be forwarded: " + http.StatusText(status)
	}
	return "apic_auth: API Manager at " + h.serverHost + " " + phrase
}

// hasErrorRoutes reports whether r's server has handle_errors routes.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.Errors != nil && len(srv.Errors.Routes) > 0
}
