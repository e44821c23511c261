package redistest

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartPing(t *testing.T) {
	s := Start(t)
	if host, _, err := net.SplitHostPort(s.Addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q, want 127.0.0.1:port", s.Addr)
	}
	got, err := s.Do("PING")
	if err != nil || got != "PONG" {
		t.Fatalf("PING = %v, %v; want PONG", got, err)
	}
	// No persistence, and its own directory.
	for param, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1"} {
		v, err := s.Client().ConfigGet(context.Background(), param).Result()
		if err != nil || v[param] != want {
			t.Errorf("CONFIG GET %s = %v, %v; want %q", param, v, err, want)
		}
	}
	if v, _ := s.Client().ConfigGet(context.Background(), "dir").Result(); !strings.HasPrefix(v["dir"], os.TempDir()) {
		t.Errorf("dir = %q, want under %s", v["dir"], os.TempDir())
	}
}

func TestKeysDump(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "a/one", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, "a", redis.Z{Score: 1, Member: "one"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, "h", "f", "hv").Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Keys("a*"), ","); got != "a,a/one" {
		t.Errorf("Keys(a*) = %s, want a,a/one", got)
	}
	d := s.Dump()
	want := map[string]string{"a/one": "v1", "a": "one\n", "h": "f\nhv\n"}
	if len(d) != len(want) {
		t.Errorf("Dump has %d keys, want %d: %q", len(d), len(want), d)
	}
	for k, v := range want {
		if string(d[k]) != v {
			t.Errorf("Dump[%q] = %q, want %q", k, d[k], v)
		}
	}
}

// A second server gets another port, and both run at once.
func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("both servers on %s", a.Addr)
	}
	if err := a.Client().Set(context.Background(), "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Keys("*")); n != 0 {
		t.Errorf("the second server has %d keys, want 0", n)
	}
}

// Pause makes a bounded call time out; Resume heals the server.
func TestPauseResume(t *testing.T) {
	s := Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING before Pause: %v", err)
	}
	s.Pause()
	err := c.Set(ctx, "during-pause", "x", 0).Err()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("SET on a paused server = %v, want a timeout", err)
	}
	s.Resume()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

// Restart brings an empty server up on the same port, and clients
// reconnect to it.
func TestRestart(t *testing.T) {
	s := Start(t)
	addr := s.Addr
	ctx := context.Background()
	if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("Addr after Restart = %s, want %s", s.Addr, addr)
	}
	if n, err := s.Client().Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS k after Restart = %d, %v; want 0 (no persistence)", n, err)
	}
	if got, err := s.Do("PING"); err != nil || got != "PONG" {
		t.Errorf("PING after Restart = %v, %v", got, err)
	}
}

// Kill ends the server: calls then fail at once, on a refused connection.
func TestKill(t *testing.T) {
	s := Start(t)
	s.Kill()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	err := c.Ping(context.Background()).Err()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("PING after Kill = %v, want connection refused", err)
	}
}

// A port taken between picking and binding is detected from the server's
// exit, and start reports it so that Start tries another.
func TestStartBindFailure(t *testing.T) {
	s := Start(t)
	taken := &Server{t: t, bin: s.bin, dir: t.TempDir(), port: s.port}
	if err := taken.start(); !errors.Is(err, errBind) {
		t.Fatalf("start on a taken port = %v, want errBind", err)
	}
}
