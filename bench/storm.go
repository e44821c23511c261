package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// stormResult is the outcome of a storm: n concurrent GETs released at
// once.
type stormResult struct {
	Requests int     `json:"requests"`
	OK       int     `json:"ok"`     // 2xx responses
	Failed   int     `json:"failed"` // other statuses and errors
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	WallMS   float64 `json:"wall_ms"` // from the release to the last response
	// FirstErrors are the causes of the first few failures.
	FirstErrors []string `json:"first_errors,omitempty"`
}

// storm sends n GET requests to url at once: n goroutines, each with one
// request, are released together by closing a channel. Each request's
// latency runs from the release to the end of its response body. The
// client keeps no limit on connections per host, so every request gets
// its own connection.
func storm(ctx context.Context, url string, n int, timeout time.Duration) stormResult {
	tr := &http.Transport{
		MaxConnsPerHost:     0, // no limit
		MaxIdleConns:        n,
		MaxIdleConnsPerHost: n,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: timeout, Transport: tr}

	type result struct {
		took   time.Duration
		status int
		err    error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			t0 := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err == nil {
				var resp *http.Response
				if resp, err = client.Do(req); err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					results[i].status = resp.StatusCode
				}
			}
			results[i].took = time.Since(t0)
			results[i].err = err
		}()
	}
	ready.Wait()
	released := time.Now()
	close(start)
	done.Wait()
	wall := time.Since(released)

	out := stormResult{Requests: n, WallMS: ms(wall)}
	lat := make([]time.Duration, 0, n)
	for _, r := range results {
		lat = append(lat, r.took)
		if r.err == nil && r.status >= 200 && r.status < 300 {
			out.OK++
			continue
		}
		out.Failed++
		if len(out.FirstErrors) < 3 {
			if r.err != nil {
				out.FirstErrors = append(out.FirstErrors, r.err.Error())
			} else {
				out.FirstErrors = append(out.FirstErrors, fmt.Sprintf("status %d", r.status))
			}
		}
	}
	slices.Sort(lat)
	out.P50MS = ms(nearestRank(lat, 50))
	out.P99MS = ms(nearestRank(lat, 99))
	out.MaxMS = ms(lat[len(lat)-1])
	return out
}
