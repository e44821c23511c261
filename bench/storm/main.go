// Command storm fires N concurrent GET requests at one URL at once: N
// goroutines, each with one request, are released together by closing a
// channel. Each request's latency runs from the release to the end of its
// response body. The client keeps no limit on connections per host, so
// every request gets its own connection.
//
//	go run ./bench/storm -url http://127.0.0.1:9080/api/me -n 1000
//
// Standard output is one line, for scripts to parse:
//
//	storm requests=1000 ok=1000 failed=0 p50_ms=41.20 p99_ms=80.11 max_ms=83.02 wall_ms=85.40
//
// ok counts 2xx responses; failed counts the rest (other statuses and
// errors), whose first few causes go to standard error. The exit status is
// 0 whenever the storm ran, failures or not.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	n := flag.Int("n", 1000, "number of concurrent requests")
	timeout := flag.Duration("timeout", 60*time.Second, "bound of each request")
	flag.Parse()
	if *url == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: storm -url URL [-n 1000] [-timeout 60s]")
		os.Exit(2)
	}

	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			MaxConnsPerHost:     0, // no limit
			MaxIdleConns:        *n,
			MaxIdleConnsPerHost: *n,
			DisableCompression:  true,
		},
	}

	type result struct {
		took   time.Duration
		status int
		err    error
	}
	results := make([]result, *n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range *n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			t0 := time.Now()
			resp, err := client.Get(*url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results[i].status = resp.StatusCode
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

	lat := make([]time.Duration, 0, *n)
	ok, failed, reported := 0, 0, 0
	for _, r := range results {
		lat = append(lat, r.took)
		if r.err == nil && r.status >= 200 && r.status < 300 {
			ok++
			continue
		}
		failed++
		if reported < 5 {
			reported++
			if r.err != nil {
				log.Printf("storm: request failed: %v", r.err)
			} else {
				log.Printf("storm: request answered %d", r.status)
			}
		}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) time.Duration {
		// nearest rank
		i := int(p/100*float64(len(lat))+0.999999) - 1
		return lat[max(0, min(i, len(lat)-1))]
	}
	fmt.Printf("storm requests=%d ok=%d failed=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f wall_ms=%.2f\n",
		*n, ok, failed, ms(pct(50)), ms(pct(99)), ms(lat[len(lat)-1]), ms(wall))
}
