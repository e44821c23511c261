package apicsim_test

import (
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestConcurrentLoginsWithRevocation(t *testing.T) {
	s := start(t)
	const workers, callsEach = 50, 3
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	t.Cleanup(client.CloseIdleConnections)

	var ok200, got401 atomic.Int64
	errs := make(chan error, workers*(callsEach+1))
	stop := make(chan struct{})
	var meddler sync.WaitGroup
	meddler.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 3 {
			case 0:
				s.RevokeAll()
			case 1:
				s.RevokeUser(apicsim.DefaultProviderRealm, apicsim.DefaultProviderUsername)
			default:
				_ = s.Stats()
				_ = s.TokenRequests("", "")
				_ = s.RecentTokenRequests()
			}
			runtime.Gosched()
		}
	})

	var wg sync.WaitGroup
	for i := range workers {
		grant := devGrant()
		if i%2 == 1 {
			grant = adminGrant()
		}
		wg.Go(func() {
			r, err := trySend(client, http.MethodPost, s.URL+"/api/token", jsonOf(grant), "Content-Type", "application/json")
			if err != nil || r.Status != 200 {
				errs <- fmt.Errorf("login %d: %v %d %s", i, err, r.Status, r.Body)
				return
			}
			tok, _ := decodeObject(r.Body)["access_token"].(string)
			for range callsEach {
				r, err := trySend(client, http.MethodGet, s.URL+"/api/me", nil, "Authorization", "Bearer "+tok)
				switch {
				case err != nil:
					errs <- err
				case r.Status == 200:
					ok200.Add(1)
				default:
					got401.Add(1)
					if err := checkError(r, 401, "revoked"); err != nil {
						errs <- fmt.Errorf("worker %d: %v", i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	meddler.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	t.Logf("clients saw %d×200 and %d×401", ok200.Load(), got401.Load())
	if n := s.TokenRequests("", ""); n != workers {
		t.Errorf("TokenRequests = %d, want %d", n, workers)
	}
	if n := s.TokenRequests(apicsim.GrantPassword, apicsim.OutcomeOK); n != workers {
		t.Errorf("TokenRequests(password, ok) = %d, want %d", n, workers)
	}
	st := s.Stats()
	if st.TokensIssued != workers {
		t.Errorf("TokensIssued = %d, want %d", st.TokensIssued, workers)
	}
	if st.API[200] != int(ok200.Load()) || st.API[401] != int(got401.Load()) || len(st.API) > 2 {
		t.Errorf("Stats().API = %v, clients saw %d×200 and %d×401", st.API, ok200.Load(), got401.Load())
	}
	if n := s.APICalls(0); n != workers*callsEach {
		t.Errorf("APICalls = %d, want %d", n, workers*callsEach)
	}
	if n := len(s.RecentTokenRequests()); n != workers {
		t.Errorf("%d recent token requests, want %d", n, workers)
	}
}

func TestConcurrentRefreshUsesTokenOnce(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
	const racers = 20
	var wg sync.WaitGroup
	statuses := make(chan int, racers)
	for range racers {
		wg.Go(func() {
			r, err := trySend(nil, http.MethodPost, s.URL+"/api/token", jsonOf(refreshGrant(rt)), "Content-Type", "application/json")
			if err != nil {
				statuses <- -1
				return
			}
			statuses <- r.Status
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for st := range statuses {
		count[st]++
	}
	if count[200] != 1 || count[401] != racers-1 {
		t.Errorf("statuses %v, want one 200 and %d 401", count, racers-1)
	}
}
