package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// publishPath is the simulator's publish endpoint for the provider org
// localtest.
const publishPath = "/api/catalogs/localtest/sandbox/publish"

// loadRequests is how many answers the load tests wait for before and
// after their fault: APIC_REVOKE_LOAD_REQUESTS, by default 2000, or 500
// under the race detector, which slows the proxy and the simulator down
// several times.
func loadRequests(t *testing.T) int {
	t.Helper()
	v := os.Getenv("APIC_REVOKE_LOAD_REQUESTS")
	if v == "" && raceEnabled {
		return 500
	}
	if v == "" {
		return 2000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("APIC_REVOKE_LOAD_REQUESTS=%q: want a positive number of requests", v)
	}
	return n
}

// awaitOrStop waits for ch to close. The bound only ends a broken test:
// it then stops the load (stop and wait) and fails.
func awaitOrStop(t *testing.T, ch <-chan struct{}, what string, stop chan struct{}, wait func()) {
	t.Helper()
	timer := time.NewTimer(awaitBound)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		close(stop)
		wait()
		t.Fatalf("no %s within %s", what, awaitBound)
	}
}

// loadResult counts what the load clients saw.
type loadResult struct {
	mu       sync.Mutex
	total    int
	byStatus map[int]int
	publish  int
	sample   map[int]string // a body of each non-2xx status
}

// runLoad runs workers clients, each sending requests back to back (GET
// /api/me, GET /api/orgs, and, when publish is set, a small publish) until
// stop is closed. The returned function waits for them to end. Every
// transport error fails the test.
func runLoad(t *testing.T, e *env, workers int, publish bool, stop <-chan struct{}, onResponse func(http.Header)) (*loadResult, func()) {
	t.Helper()
	res := &loadResult{byStatus: map[int]int{}, sample: map[int]string{}}
	var body []byte
	var ctype string
	if publish {
		body, ctype = publishBody(t, 4<<10, 1)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w + i) % 3
				isPublish := publish && k == 2
				var req *http.Request
				switch {
				case k == 0:
					req, _ = http.NewRequest(http.MethodGet, "http://localhost/api/me", nil)
				case !isPublish:
					req, _ = http.NewRequest(http.MethodGet, "http://localhost/api/orgs", nil)
				default:
					req, _ = http.NewRequest(http.MethodPost, "http://localhost"+publishPath, bytes.NewReader(body))
					req.Header.Set("Content-Type", ctype)
				}
				status, hdr, resp, err := e.send(req)
				if err != nil {
					t.Errorf("load request %s %s: %v", req.Method, req.URL.Path, err)
					return
				}
				if isPublish && status == http.StatusCreated && hdr.Get(apicsim.ReceivedBytesHeader) != strconv.Itoa(len(body)) {
					t.Errorf("publish under load: the simulator received %q bytes of %d: %.300s", hdr.Get(apicsim.ReceivedBytesHeader), len(body), resp)
				}
				if onResponse != nil {
					onResponse(hdr)
				}
				res.mu.Lock()
				res.total++
				res.byStatus[status]++
				if isPublish {
					res.publish++
				}
				if status/100 != 2 && res.sample[status] == "" {
					res.sample[status] = string(resp)
				}
				res.mu.Unlock()
			}
		})
	}
	return res, wg.Wait
}

// non2xx returns the count of non-2xx answers and of 401s.
func (r *loadResult) non2xx() (bad, unauthorized int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, n := range r.byStatus {
		if s/100 != 2 {
			bad += n
		}
	}
	return bad, r.byStatus[http.StatusUnauthorized]
}

// publishBody builds a publish upload of a product, its API and a wsdl
// part of size pseudo-random bytes (apicsim.PublishUpload). It returns the
// exact bytes and their Content-Type.
func publishBody(t *testing.T, size int, seed byte) ([]byte, string) {
	t.Helper()
	var key [32]byte
	key[0] = seed
	body, n, ctype := apicsim.PublishUpload("fault-suite", fmt.Sprintf("1.0.%d", seed), rand.NewChaCha8(key), int64(size))
	data, err := io.ReadAll(body)
	if err != nil || int64(len(data)) != n {
		t.Fatalf("publish upload: %d of %d bytes: %v", len(data), n, err)
	}
	return data, ctype
}

// checkPublished checks a publish answer: 201 with a Product, and the
// byte count and SHA-256 the simulator received equal to those of sent.
func checkPublished(t *testing.T, what string, status int, hdr http.Header, body, sent []byte) {
	t.Helper()
	if status != http.StatusCreated {
		t.Fatalf("%s: status %d, want 201: %.300s", what, status, body)
	}
	var got struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Type != "product" {
		t.Fatalf("%s: answer %.300s, want a Product: %v", what, body, err)
	}
	sum := sha256.Sum256(sent)
	if hdr.Get(apicsim.ReceivedBytesHeader) != strconv.Itoa(len(sent)) || hdr.Get(apicsim.ReceivedSHA256) != hex.EncodeToString(sum[:]) {
		t.Fatalf("%s: the simulator received %s bytes with SHA-256 %s, the client sent %d bytes with SHA-256 %x",
			what, hdr.Get(apicsim.ReceivedBytesHeader), hdr.Get(apicsim.ReceivedSHA256), len(sent), sum)
	}
}
