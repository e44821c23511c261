package shared

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// FuzzOpen feeds open any stored bytes: it never panics, and what it
// opens is a record that seals and opens again the same; anything else is
// ErrUnreadable.
func FuzzOpen(f *testing.F) {
	s, err := newSealer(testID.Hash(), testSecrets)
	if err != nil {
		f.Fatal(err)
	}
	valid, err := s.seal(liveRecord(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	var e envelope
	_ = json.Unmarshal(valid, &e)
	e.Lasts = e.Lasts.Add(time.Second)
	later, _ := json.Marshal(e)
	f.Add(later)
	other, _ := newSealer(Identity{Server: "https://other.example.test"}.Hash(), testSecrets)
	otherSealed, _ := other.seal(deadRecord())
	f.Add(otherSealed)
	f.Add([]byte(`{"v":1,"lasts":"2030-01-01T00:00:00Z","nonce":"AAAAAAAAAAAAAAAA","sealed":"AAAA"}`))
	f.Add([]byte(`{"v":1,"nonce":null,"sealed":null}`))
	f.Add([]byte("null"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, _, err := s.open(data)
		if err != nil {
			if !errors.Is(err, ErrUnreadable) || rec != nil {
				t.Fatalf("open = %v, %v; want nil, ErrUnreadable", rec, err)
			}
			return
		}
		if rec == nil {
			t.Fatal("open returned no record and no error")
		}
		again, err := s.seal(rec)
		if err != nil {
			t.Fatalf("sealing the opened record: %v", err)
		}
		rec2, _, err := s.open(again)
		if err != nil {
			t.Fatalf("opening it again: %v", err)
		}
		a, _ := json.Marshal(rec)
		b, _ := json.Marshal(rec2)
		if string(a) != string(b) {
			t.Fatalf("opened %s, then %s", a, b)
		}
	})
}

// BenchmarkNew is the cost of deriving a record key (argon2id), which a
// proxy pays once per identity at provisioning. Its save+loads/op metric
// puts it against one Save and Load of a record on the file_system
// storage (save+load-ns), measured in the same run after the timed loop.
func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := New(Options{Identity: testID, Secrets: testSecrets}); err != nil {
			b.Fatal(err)
		}
	}
	perNew := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	s, err := New(Options{Storage: &certmagic.FileStorage{Path: b.TempDir()}, Identity: testID, Secrets: testSecrets})
	if err != nil {
		b.Fatal(err)
	}
	const baselineRuns = 200
	start := time.Now()
	for range baselineRuns {
		saveLoad(b, s)
	}
	perSaveLoad := float64(time.Since(start).Nanoseconds()) / baselineRuns
	b.ReportMetric(perSaveLoad, "save+load-ns")
	b.ReportMetric(perNew/perSaveLoad, "save+loads/op")
}

// BenchmarkSaveLoad is one Save and one Load of a record on the
// file_system storage: BenchmarkNew's baseline.
func BenchmarkSaveLoad(b *testing.B) {
	s, err := New(Options{Storage: &certmagic.FileStorage{Path: b.TempDir()}, Identity: testID, Secrets: testSecrets})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		saveLoad(b, s)
	}
}

var benchRecord = liveRecord(1)

func saveLoad(b *testing.B, s *Store) {
	ctx := context.Background()
	if err := s.Save(ctx, benchRecord); err != nil {
		b.Fatal(err)
	}
	if _, _, err := s.Load(ctx); err != nil {
		b.Fatal(err)
	}
}

// TestIdentityHashScope: the scope is part of the identity, as a set; an
// identity without one keeps the hash it had before scopes were part of
// it, so that a fleet's record outlives an upgrade.
func TestIdentityHashScope(t *testing.T) {
	// The hash of testID as the proxies before the scope option store it.
	const before = "c49b2551251748c2af66ffae774c382292312e2628b2f17d7f4d33526022b4c9"
	if got := testID.Hash(); got != before {
		t.Errorf("the hash of an identity without scope changed: %s, want %s", got, before)
	}
	with := func(scope ...string) string {
		id := testID
		id.Scope = scope
		return id.Hash()
	}
	if with() != before || with([]string{}...) != before {
		t.Error("an empty scope hashes other than no scope")
	}
	readOnly := with("my:view", "product:view")
	if readOnly == before {
		t.Error("a scope does not change the hash")
	}
	if with("product:view", "my:view", "my:view") != readOnly {
		t.Error("the same set of scopes in another order hashes otherwise")
	}
	if with("my:view") == readOnly || with("my:view", "product:view", "my:manage") == readOnly {
		t.Error("other scopes hash the same")
	}
}
