package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The end-to-end replay tests (a 401 from API Manager renews the token
// and replays the request once) are in package e2e (replay_test.go);
// these test the body and response writer behind them directly.

func TestReplayBody(t *testing.T) {
	src := strings.Repeat("0123456789", 10)
	b := &replayBody{rc: io.NopCloser(strings.NewReader(src)), max: 64}
	head := make([]byte, 30)
	if _, err := io.ReadFull(b, head); err != nil {
		t.Fatal(err)
	}
	rest, ok := b.detach()
	if !ok {
		t.Fatal("detach refused after 30 of 64 bytes")
	}
	if _, err := b.Read(head); !errors.Is(err, errBodyReplayed) {
		t.Fatalf("read after detach: %v", err)
	}
	all, err := io.ReadAll(rest)
	if err != nil || string(all) != src {
		t.Fatalf("replayed %q, %v", all, err)
	}

	// The buffer never grows past max, however the reads fall.
	capped := &replayBody{rc: io.NopCloser(strings.NewReader(strings.Repeat("x", 10000))), max: 9000}
	chunk := make([]byte, 7)
	for range 9000 / 7 {
		if _, err := capped.Read(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if c := cap(capped.buf); c > 9000 || len(capped.buf) != 9000/7*7 {
		t.Fatalf("buffer len %d cap %d, want cap <= 9000", len(capped.buf), c)
	}

	over := &replayBody{rc: io.NopCloser(strings.NewReader(src)), max: 64}
	if _, err := io.ReadAll(over); err != nil {
		t.Fatal(err)
	}
	if !over.exceeded() {
		t.Fatal("100 bytes read with max 64, not exceeded")
	}
	if _, ok := over.detach(); ok {
		t.Fatal("detach of an exceeded body")
	}
	if over.buf != nil {
		t.Fatal("an exceeded body keeps its buffer")
	}
}

func TestReplayWriter(t *testing.T) {
	t.Run("passes others through", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rec.Header().Set("Server", "Caddy")
		rw := getReplayWriter(rec, true, nil, "")
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusCreated)
		_, _ = rw.Write([]byte("{}"))
		if rec.Code != 201 || rec.Body.String() != "{}" || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Server") != "Caddy" {
			t.Fatalf("got %d %q %v", rec.Code, rec.Body, rec.Header())
		}
	})
	t.Run("holds a 401 without trace, then releases it", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rw := getReplayWriter(rec, true, nil, "")
		rw.Header().Set("Www-Authenticate", "Bearer")
		rw.WriteHeader(http.StatusUnauthorized)
		_, _ = rw.Write([]byte(`{"status":401,"message":["expired"]}`))
		rw.Flush()
		if !rw.held || rec.Header().Get("Www-Authenticate") != "" || rec.Body.Len() != 0 || rec.Flushed {
			t.Fatalf("held 401 reached the client: held=%v header=%v body=%q", rw.held, rec.Header(), rec.Body)
		}
		rw.release()
		if rec.Code != 401 || rec.Body.String() != `{"status":401,"message":["expired"]}` || rec.Header().Get("Www-Authenticate") != "Bearer" {
			t.Fatalf("released %d %q %v", rec.Code, rec.Body, rec.Header())
		}
	})
	t.Run("passes a 401 it may not hold", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rw := getReplayWriter(rec, false, nil, "")
		rw.WriteHeader(http.StatusUnauthorized)
		if rw.held || rec.Code != 401 {
			t.Fatalf("held=%v code=%d", rw.held, rec.Code)
		}
	})
	t.Run("implicit 200", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rw := getReplayWriter(rec, true, nil, "")
		_, _ = rw.Write([]byte("x"))
		if rec.Code != 200 || rw.status != 200 {
			t.Fatalf("code %d", rec.Code)
		}
	})
}
