package apicsim_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// clientTrusting returns a client whose only root is the PEM certificate
// (none when caPEM is nil).
func clientTrusting(t *testing.T, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if caPEM != nil && !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CAPEM holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestCertificatesVerify(t *testing.T) {
	_, ts, certs := simtest.StartTLS(t, []string{"127.0.0.1", "localhost"})

	t.Run("client trusting the CA", func(t *testing.T) {
		c := clientTrusting(t, certs.CAPEM)
		r := send(t, c, http.MethodPost, ts.URL+"/api/token", jsonOf(devGrant()), "Content-Type", "application/json")
		wantStatus(t, r, 200)
		tok := decodeObject(r.Body)["access_token"].(string)
		wantStatus(t, send(t, c, http.MethodGet, ts.URL+"/api/me", nil, "Authorization", "Bearer "+tok), 200)
	})

	t.Run("client without the CA", func(t *testing.T) {
		_, err := trySend(clientTrusting(t, nil), http.MethodGet, ts.URL+"/api/cloud/admin/identity-providers", nil)
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) {
			t.Fatalf("error %v, want an unknown authority", err)
		}
	})

	t.Run("server certificate", func(t *testing.T) {
		leaf, err := x509.ParseCertificate(certs.Server.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" {
			t.Errorf("leaf names %v %v, want 127.0.0.1 and localhost", leaf.IPAddresses, leaf.DNSNames)
		}
		if leaf.IsCA {
			t.Error("server certificate is a CA")
		}
	})
}

func TestCertificatesForOtherHostFailHostnameCheck(t *testing.T) {
	_, ts, certs := simtest.StartTLS(t, []string{"otherhost"})
	_, err := trySend(clientTrusting(t, certs.CAPEM), http.MethodGet, ts.URL+"/api/cloud/admin/identity-providers", nil)
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Fatalf("error %v, want a hostname mismatch", err)
	}
}
