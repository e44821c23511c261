package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// BenchmarkGetParallel is the token lookup every request makes, from
// every core at once, with a token held: no lock, no allocation.
func BenchmarkGetParallel(b *testing.B) {
	m := session.New(session.Options{Fetcher: newFakeFetcher(8 * time.Hour)})
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
