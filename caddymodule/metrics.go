package caddymodule

import (
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// identityStats counts what an identity did. Its counters live as long as
// the identity, across config reloads; each config's metrics registry
// reads them at scrape time.
type identityStats struct {
	mu         sync.Mutex
	durCount   uint64
	durSum     float64
	durBuckets [len(durationBuckets)]uint64 // not cumulative
	failures   map[string]uint64            // handler failures by cause
	replays    map[string]uint64            // replays by outcome
	refused    map[string]uint64            // requests the guard refused, by status
}

// durationBuckets are the upper bounds of the token request duration
// histogram, in seconds.
var durationBuckets = [...]float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// tokenRequestTook records how long a token request took, from the
// session's hooks.
func (s *identityStats) tokenRequestTook(took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := took.Seconds()
	s.durCount++
	s.durSum += secs
	for i, ub := range durationBuckets {
		if secs <= ub {
			s.durBuckets[i]++
			break
		}
	}
}

func (s *identityStats) count(m *map[string]uint64, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = make(map[string]uint64)
	}
	(*m)[key]++
}

// snapshot is a copy of the counters.
type statsSnapshot struct {
	// TokenRequests counts token requests: grant -> outcome -> n.
	TokenRequests map[string]map[string]uint64 `json:"token_requests"`
	Failures      map[string]uint64            `json:"failures"`
	Replays       map[string]uint64            `json:"replays"`
	// Refused counts requests the proxy refused to forward (wrong host,
	// a web page, a path outside paths...), by status.
	Refused    map[string]uint64 `json:"refused"`
	durCount   uint64
	durSum     float64
	durBuckets map[float64]uint64
}

// snapshot copies the counters, with the session's token requests.
func (s *identityStats) snapshot(requests session.Requests) statsSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := statsSnapshot{
		TokenRequests: make(map[string]map[string]uint64),
		Failures:      make(map[string]uint64),
		Replays:       make(map[string]uint64),
		Refused:       make(map[string]uint64),
		durCount:      s.durCount,
		durSum:        s.durSum,
		durBuckets:    make(map[float64]uint64, len(durationBuckets)),
	}
	for k, n := range requests {
		if out.TokenRequests[k.Grant] == nil {
			out.TokenRequests[k.Grant] = make(map[string]uint64)
		}
		out.TokenRequests[k.Grant][k.Outcome] = n
	}
	for k, n := range s.failures {
		out.Failures[k] = n
	}
	for k, n := range s.replays {
		out.Replays[k] = n
	}
	for k, n := range s.refused {
		out.Refused[k] = n
	}
	var cum uint64
	for i, ub := range durationBuckets {
		cum += s.durBuckets[i]
		out.durBuckets[ub] = cum
	}
	return out
}

// Metric names: namespace caddy, subsystem apic_auth. The only label that
// names an identity is its name (see Handler.Name).
var (
	descTokenRequests = prometheus.NewDesc("caddy_apic_auth_token_requests_total",
		"Token requests to API Connect, by identity, grant type and outcome (ok, or the failure's cause).",
		[]string{"identity", "grant", "outcome"}, nil)
	descTokenDuration = prometheus.NewDesc("caddy_apic_auth_token_request_duration_seconds",
		"How long token requests took, by identity.",
		[]string{"identity"}, nil)
	descTokenExpiry = prometheus.NewDesc("caddy_apic_auth_token_expiry_seconds",
		"Seconds until the held token expires, by identity (absent while no token is held).",
		[]string{"identity"}, nil)
	descReady = prometheus.NewDesc("caddy_apic_auth_ready",
		"Whether the identity holds a valid token that requests get now (1) or not (0), as GET /apic_auth/ready reports it.",
		[]string{"identity"}, nil)
	descReplays = prometheus.NewDesc("caddy_apic_auth_replays_total",
		"Requests replayed after API Manager refused the token with 401, by identity and outcome (ok, refused_again, body_too_large, no_token, suppressed: a resource that refused a new token lately got no new login).",
		[]string{"identity", "outcome"}, nil)
	descWaits = prometheus.NewDesc("caddy_apic_auth_token_waits_total",
		"Requests that waited for a token after the first one, by identity: the held token had expired or was refused. 0 while refreshes come in time.",
		[]string{"identity"}, nil)
	descFailures = prometheus.NewDesc("caddy_apic_auth_failures_total",
		"Requests answered 502 because no token could be had, by identity and cause.",
		[]string{"identity", "cause"}, nil)
	descRefused = prometheus.NewDesc("caddy_apic_auth_refused_requests_total",
		"Requests the proxy refused to forward (a host not allowed, a web page, a path outside paths, a path escape), by identity and status.",
		[]string{"identity", "status"}, nil)

	descSharedTokens = prometheus.NewDesc("caddy_apic_auth_shared_tokens_total",
		"Tokens of the shared session, by identity and source: adopted (another proxy obtained it) or stored (this proxy obtained it for the fleet).",
		[]string{"identity", "source"}, nil)
	descSharedLockWaits = prometheus.NewDesc("caddy_apic_auth_shared_lock_waits_total",
		"Waits for another proxy's login in the shared session, by identity.",
		[]string{"identity"}, nil)
	descSharedFallbacks = prometheus.NewDesc("caddy_apic_auth_shared_fallbacks_total",
		"Logins of this proxy's own outside the shared session (storage failing, the record unreadable, or lock_wait passed), by identity.",
		[]string{"identity"}, nil)
	descSharedStorageErrors = prometheus.NewDesc("caddy_apic_auth_shared_storage_errors_total",
		"Failed calls to the shared session's storage, by identity.",
		[]string{"identity"}, nil)
	descSharedUnreadable = prometheus.NewDesc("caddy_apic_auth_shared_unreadable_total",
		"Reads of a shared session record that did not open with this proxy's credentials (written with others, or altered), by identity.",
		[]string{"identity"}, nil)
	descSharedStorageOps = prometheus.NewDesc("caddy_apic_auth_shared_storage_operations_total",
		"Calls to the shared session's storage, by identity and operation (load, store, lock, unlock).",
		[]string{"identity", "op"}, nil)
	descSharedGeneration = prometheus.NewDesc("caddy_apic_auth_shared_generation",
		"The shared session's generation of the held token, by identity: it grows by one at each login or refresh of the fleet.",
		[]string{"identity"}, nil)
)

// sharedDescs are the shared session's metrics, present for identities
// with one.
var sharedDescs = []*prometheus.Desc{descSharedTokens, descSharedLockWaits, descSharedFallbacks, descSharedStorageErrors, descSharedUnreadable, descSharedStorageOps, descSharedGeneration}

// collector exposes every live identity's counters. Each config load has
// a registry of its own; the collector reads the identities at scrape
// time, so counters carry on across reloads.
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{descTokenRequests, descTokenDuration, descTokenExpiry, descReady, descReplays, descWaits, descFailures, descRefused}, sharedDescs...) {
		ch <- d
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	seen := make(map[string]bool)
	var ids []*identity
	identities.Range(func(_, v any) bool {
		id := v.(*identity)
		if !seen[id.name] { // two identities of one name: the first counts
			seen[id.name] = true
			ids = append(ids, id)
		}
		return true
	})
	sort.Slice(ids, func(i, j int) bool { return ids[i].name < ids[j].name })
	for _, id := range ids {
		ss := id.sess.Status()
		st := id.stats.snapshot(ss.Requests)
		for grant, m := range st.TokenRequests {
			for outcome, n := range m {
				ch <- prometheus.MustNewConstMetric(descTokenRequests, prometheus.CounterValue, float64(n), id.name, grant, outcome)
			}
		}
		ch <- prometheus.MustNewConstHistogram(descTokenDuration, st.durCount, st.durSum, st.durBuckets, id.name)
		if t := ss.Token; t != nil {
			ch <- prometheus.MustNewConstMetric(descTokenExpiry, prometheus.GaugeValue, time.Until(t.Expiry).Seconds(), id.name)
		}
		ready := 0.0
		if ss.Ready {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready, id.name)
		for outcome, n := range st.Replays {
			ch <- prometheus.MustNewConstMetric(descReplays, prometheus.CounterValue, float64(n), id.name, outcome)
		}
		ch <- prometheus.MustNewConstMetric(descWaits, prometheus.CounterValue, float64(ss.Waited), id.name)
		for cause, n := range st.Failures {
			ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(n), id.name, cause)
		}
		for status, n := range st.Refused {
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(n), id.name, status)
		}
		if sh := id.sharedStatus(ss.Shared); sh != nil {
			collectShared(ch, id.name, sh)
		}
	}
}

// collectShared sends an identity's shared session metrics.
func collectShared(ch chan<- prometheus.Metric, name string, sh *sharedStatus) {
	counter := func(d *prometheus.Desc, n uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), append([]string{name}, labels...)...)
	}
	counter(descSharedTokens, sh.Adopted, "adopted")
	counter(descSharedTokens, sh.Stored, "stored")
	counter(descSharedLockWaits, sh.LockWaits)
	counter(descSharedFallbacks, sh.Fallbacks)
	counter(descSharedStorageErrors, sh.StorageErrors)
	counter(descSharedUnreadable, sh.Unreadable)
	for op, n := range sh.StorageOps {
		counter(descSharedStorageOps, n, op)
	}
	ch <- prometheus.MustNewConstMetric(descSharedGeneration, prometheus.GaugeValue, float64(sh.Generation), name)
}

// registerMetrics adds the collector to a config's registry, once.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(collector{})
	var already prometheus.AlreadyRegisteredError
	if err != nil && !errors.As(err, &already) {
		return err
	}
	return nil
}

// Interface guard
var _ prometheus.Collector = collector{}
