package caddymodule

import (
	"fmt"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apic-tools/apic-auth-proxy/internal/linkrewrite"
)

// provisionLinks checks the rewrite_links settings and reads the base URL
// whose links are rewritten.
func (h *Handler) provisionLinks(server string) error {
	switch {
	case !h.RewriteLinks && h.RewriteLinksMaxBody != 0:
		return fmt.Errorf("rewrite_links_max_body: set without rewrite_links")
	case !h.RewriteLinks:
		return nil
	case h.RewriteLinksMaxBody < 0:
		return fmt.Errorf("rewrite_links_max_body: want a size in bytes, got %d", h.RewriteLinksMaxBody)
	case h.RewriteLinksMaxBody == 0:
		h.linksMax = DefaultRewriteLinksMaxBody
	default:
		h.linksMax = h.RewriteLinksMaxBody
	}
	var err error
	if h.links, err = linkrewrite.ParseBase(server); err != nil {
		return fmt.Errorf("rewrite_links: server: %v", err)
	}
	return nil
}

// linkWriter returns a writer that rewrites the response's links to the
// origin the client reached, or nil when links are not rewritten. The
// Host is one the guard let in (over a unix socket, where it is not
// checked, the client's own).
func (h *Handler) linkWriter(w http.ResponseWriter, r *http.Request) *linkrewrite.ResponseWriter {
	if h.links == nil {
		return nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	target, err := linkrewrite.Target(scheme, r.Host)
	if err != nil {
		if ce := h.logger.Check(zapcore.DebugLevel, "links not rewritten"); ce != nil {
			ce.Write(zap.String("identity", h.id.name), zap.String("reason", err.Error()))
		}
		return nil
	}
	return linkrewrite.NewResponseWriter(w, h.links, target, h.linksMax)
}

// closeLinks passes on the rest of a rewritten response and logs, at
// Debug, why a JSON body was not rewritten.
func (h *Handler) closeLinks(lw *linkrewrite.ResponseWriter) {
	if why := lw.Skipped(); why != "" {
		if ce := h.logger.Check(zapcore.DebugLevel, "links not rewritten"); ce != nil {
			ce.Write(zap.String("identity", h.id.name), zap.String("reason", why))
		}
	}
	_ = lw.Close() // a client that is gone has nothing to get
}
