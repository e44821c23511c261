package testclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v", c.Now())
	}
	c.Advance(90 * time.Second)
	c.Advance(-30 * time.Second)
	if got := c.Now().Sub(start); got != time.Minute {
		t.Fatalf("advanced by %v, want 1m", got)
	}
	c.Set(start.Add(time.Hour))
	if got := c.Now().Sub(start); got != time.Hour {
		t.Fatalf("set to +%v, want 1h", got)
	}
}
