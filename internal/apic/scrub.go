package apic

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
)

// Redacted replaces a secret in scrubbed text.
const Redacted = "[REDACTED]"

// scrubWindow is the length of the pieces of a secret that are looked for:
// any run of this many characters of a secret, in any of its forms, is
// removed, so that a secret cut short (by the server, or by a message
// shortened later) is still caught.
const scrubWindow = 8

// minSecret is the shortest value scrubbed: shorter ones would redact
// ordinary words.
const minSecret = 4

// Scrubber removes secrets from text: each secret as it is, JSON-escaped
// (Go's \u003c form and the standard one), URL-encoded (query and path,
// upper- and lower-case hex), and base64-encoded (standard and URL
// alphabets, at every alignment), and any run of 8 characters of any of
// these. The zero value and nil scrub nothing.
type Scrubber struct {
	windows map[string]struct{} // every scrubWindow-long piece of every form
	short   []string            // forms shorter than scrubWindow, matched whole
}

// NewScrubber returns a Scrubber of the given secrets; empty and very short
// values are ignored.
func NewScrubber(secrets ...string) *Scrubber {
	s := &Scrubber{windows: make(map[string]struct{})}
	for _, v := range secrets {
		if len(v) < minSecret {
			continue
		}
		for _, f := range secretForms(v) {
			if len(f) < minSecret {
				continue
			}
			if len(f) < scrubWindow {
				s.short = append(s.short, f)
				continue
			}
			for i := 0; i+scrubWindow <= len(f); i++ {
				s.windows[f[i:i+scrubWindow]] = struct{}{}
			}
		}
	}
	return s
}

// Scrub returns text with every secret piece replaced by [REDACTED].
func (s *Scrubber) Scrub(text string) string {
	if s == nil || (len(s.windows) == 0 && len(s.short) == 0) || text == "" {
		return text
	}
	var marked []bool
	mark := func(from, to int) {
		if marked == nil {
			marked = make([]bool, len(text))
		}
		for i := from; i < to; i++ {
			marked[i] = true
		}
	}
	for i := 0; i+scrubWindow <= len(text); i++ {
		if _, ok := s.windows[text[i:i+scrubWindow]]; ok {
			mark(i, i+scrubWindow)
		}
	}
	for _, f := range s.short {
		for off := 0; ; {
			j := strings.Index(text[off:], f)
			if j < 0 {
				break
			}
			mark(off+j, off+j+len(f))
			off += j + 1
		}
	}
	if marked == nil {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		if !marked[i] {
			b.WriteByte(text[i])
			i++
			continue
		}
		b.WriteString(Redacted)
		for i < len(text) && marked[i] {
			i++
		}
	}
	return b.String()
}

// ScrubAll scrubs each string of list in place and returns it.
func (s *Scrubber) ScrubAll(list []string) []string {
	for i, m := range list {
		list[i] = s.Scrub(m)
	}
	return list
}

// secretForms lists the ways v may be written in a message.
func secretForms(v string) []string {
	forms := []string{v}
	// JSON, as Go writes it (<, > and & as \u003c...) and as the
	// standard has it; and with upper-case hex.
	if b, err := json.Marshal(v); err == nil {
		forms = append(forms, string(b[1:len(b)-1]))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) == nil {
		b := bytes.TrimSpace(buf.Bytes())
		forms = append(forms, string(b[1:len(b)-1]))
	}
	for _, f := range forms[1:] {
		forms = append(forms, upperUnicodeEscapes(f))
	}
	for _, f := range []string{url.QueryEscape(v), url.PathEscape(v)} {
		forms = append(forms, f, lowerPercentEscapes(f))
	}
	// base64 of v wherever it stands in the encoded text: with 0, 1 or 2
	// bytes before it, the characters that v alone determines.
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for k := range 3 {
			e := enc.EncodeToString(append(make([]byte, k), v...))
			if k > 0 {
				e = e[4:] // the first group mixes in the bytes before
			}
			if tail := (len(v) + k) % 3; tail != 0 {
				e = e[:len(e)-(tail+1)] // the last group mixes in what follows
			}
			forms = append(forms, e)
		}
	}
	return forms
}

// lowerPercentEscapes writes the hex digits of %XX escapes lower-case.
func lowerPercentEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+3 <= len(b); i++ {
		if b[i] == '%' {
			copy(b[i+1:i+3], bytes.ToLower(b[i+1:i+3]))
			i += 2
		}
	}
	return string(b)
}

// upperUnicodeEscapes writes the hex digits of \uXXXX escapes upper-case.
func upperUnicodeEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+6 <= len(b); i++ {
		if b[i] == '\\' && b[i+1] == 'u' {
			copy(b[i+2:i+6], bytes.ToUpper(b[i+2:i+6]))
			i += 5
		}
	}
	return string(b)
}
