package apicsim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// signer makes and checks RS256 JSON Web Tokens with one key, made when
// the Server starts, as API Connect v10 does.
type signer struct {
	key *rsa.PrivateKey
	kid string
}

func newSigner() (*signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &signer{key: key, kid: randomID()}, nil
}

var b64 = base64.RawURLEncoding

func (s *signer) sign(claims any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": s.kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signingInput := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signingInput + "." + b64.EncodeToString(sig), nil
}

var errBadToken = errors.New("token is not a valid JWT signed by this server")

// verify checks the token's form, algorithm, key id and signature and
// decodes its claims into dst.
func (s *signer) verify(token string, dst any) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errBadToken
	}
	hdrJSON, err := b64.DecodeString(parts[0])
	if err != nil {
		return errBadToken
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hdrJSON, &hdr) != nil || hdr.Alg != "RS256" || hdr.Kid != s.kid {
		return errBadToken
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return errBadToken
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return errBadToken
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return errBadToken
	}
	if json.Unmarshal(payload, dst) != nil {
		return errBadToken
	}
	return nil
}

// randomID returns a random UUID (version 4) string.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexdig = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexdig[c>>4], hexdig[c&0xf])
	}
	return string(out)
}

// randomSecret returns n random bytes, URL-safe base64 encoded.
func randomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b64.EncodeToString(b)
}
