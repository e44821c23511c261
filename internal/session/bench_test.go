package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// BenchmarkGetParallel is the token lookup every request makes, from
// every core at once, with a token held: no lock, no allocation. The fake
// clock takes a mutex of its own; see BenchmarkGetParallelRealClock.
func BenchmarkGetParallel(b *testing.B) {
	clock := newFakeClock()
	benchGet(b, clock, clock.Now)
}

// BenchmarkGetParallelRealClock is the same on the real clock.
func BenchmarkGetParallelRealClock(b *testing.B) {
	clock := newFakeClock()
	clock.Set(time.Now()) // the fetcher dates its tokens by it
	benchGet(b, clock, nil)
}

func benchGet(b *testing.B, fetcherClock *fakeClock, now func() time.Time) {
	m := session.New(session.Options{Fetcher: newFakeFetcher(fetcherClock, 8*time.Hour), Now: now})
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Get(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Get(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
