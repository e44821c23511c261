package caddymodule

import (
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/tokensink"
)

// A token file (token_file, apic_config_file) belongs to the handlers that
// name it, and is kept for their identity: handlers that differ only in
// their files share one session, and each file gets that session's token.
// A config's files start with it and stop with it (App.Start, App.Stop),
// so caddy validate writes none, and a config that fails to load takes
// none over.
//
// In a reload Caddy starts the new config before it stops the old one,
// and a file both name passes from one to the other. sinkHolders keeps,
// by path, the claims of the running configs that name the file, in the
// order they started: the last one writes it. When it stops, the one
// before it (a config that stays, should the new one fail) writes it
// again; when none is left, the file is removed.
var (
	sinkMu      sync.Mutex
	sinkHolders = map[string][]*sinkClaim{}
)

// sinkClaim is a token file of one config, for one identity.
type sinkClaim struct {
	option string // token_file or apic_config_file
	sink   *tokensink.Sink
	id     *identity
}

// start makes the claim the file's writer.
func (c *sinkClaim) start() {
	sinkMu.Lock()
	defer sinkMu.Unlock()
	path := c.sink.Path()
	hs := sinkHolders[path]
	if n := len(hs); n > 0 {
		hs[n-1].id.detach(hs[n-1])
	}
	sinkHolders[path] = append(hs, c)
	c.id.attach(c)
}

// stop ends the claim: the claim started before it writes the file again,
// or, with none left, the file is removed.
func (c *sinkClaim) stop() {
	sinkMu.Lock()
	defer sinkMu.Unlock()
	path := c.sink.Path()
	hs := sinkHolders[path]
	i := slices.Index(hs, c)
	if i < 0 {
		return
	}
	writer := i == len(hs)-1
	hs = slices.Delete(hs, i, i+1)
	if len(hs) == 0 {
		delete(sinkHolders, path)
	} else {
		sinkHolders[path] = hs
	}
	if !writer {
		return
	}
	c.id.detach(c)
	if len(hs) > 0 {
		hs[len(hs)-1].id.attach(hs[len(hs)-1])
		return
	}
	l := c.id.log()
	if err := c.sink.Close(); err != nil {
		l.Warn("could not take the token out of the token file", zap.String("identity", c.id.name),
			zap.String("option", c.option), zap.String("path", path), zap.String("error", err.Error()))
		return
	}
	l.Info("took the token out of the token file", zap.String("identity", c.id.name), zap.String("option", c.option), zap.String("path", path))
}

// identitySinks are the token files an identity writes.
type identitySinks struct {
	// mu serializes the writes, so that a file never gets an older token
	// after a newer one.
	mu     sync.Mutex
	claims []*sinkClaim
	// release ends the session's Keep while claims is not empty: the
	// files need a token when no request asks for one.
	release func()
}

// attach makes id write c's file: now with the token held, if it is
// valid, and then with every new one.
func (id *identity) attach(c *sinkClaim) {
	id.sinks.mu.Lock()
	defer id.sinks.mu.Unlock()
	id.sinks.claims = append(id.sinks.claims, c)
	if t := id.sess.Current(); t != nil && time.Now().Before(t.ValidUntil) {
		id.writeSink(c, t)
	}
	if id.sinks.release == nil {
		id.sinks.release = id.sess.Keep()
	}
}

// detach stops id writing c's file.
func (id *identity) detach(c *sinkClaim) {
	id.sinks.mu.Lock()
	defer id.sinks.mu.Unlock()
	id.sinks.claims = slices.DeleteFunc(id.sinks.claims, func(x *sinkClaim) bool { return x == c })
	if len(id.sinks.claims) == 0 && id.sinks.release != nil {
		id.sinks.release()
		id.sinks.release = nil
	}
}

// writeSinks puts a new token in every file of id.
func (id *identity) writeSinks(t *session.Token) {
	id.sinks.mu.Lock()
	defer id.sinks.mu.Unlock()
	for _, c := range id.sinks.claims {
		id.writeSink(c, t)
	}
}

// writeSink puts t in c's file. A failure is logged and shown in the
// status; the next token tries again. Called with id.sinks.mu held.
func (id *identity) writeSink(c *sinkClaim, t *session.Token) {
	if err := c.sink.Write(t.AccessToken); err != nil {
		id.log().Warn("could not write the token file; the next token tries again", zap.String("identity", id.name),
			zap.String("option", c.option), zap.String("path", c.sink.Path()), zap.String("error", err.Error()))
		return
	}
	if ce := id.log().Check(zap.DebugLevel, "wrote the token file"); ce != nil {
		ce.Write(zap.String("identity", id.name), zap.String("option", c.option), zap.String("path", c.sink.Path()))
	}
}

// sinkStatus is a token file in GET /apic_auth/status.
type sinkStatus struct {
	Option    string     `json:"option"`
	Path      string     `json:"path"`
	WrittenAt *time.Time `json:"written_at,omitempty"`
	// Error is the last write's failure, gone after a success.
	Error string `json:"error,omitempty"`
}

// sinkStatus reports the files id writes.
func (id *identity) sinkStatus() []sinkStatus {
	id.sinks.mu.Lock()
	defer id.sinks.mu.Unlock()
	var out []sinkStatus
	for _, c := range id.sinks.claims {
		st := c.sink.Status()
		s := sinkStatus{Option: c.option, Path: c.sink.Path(), WrittenAt: timePtr(st.WrittenAt)}
		if st.Err != nil {
			s.Error = st.Err.Error()
		}
		out = append(out, s)
	}
	return out
}
