// Package conformance checks the simulator's answers against IBM API
// Connect's Provider API document, as restated in provider.json: for every
// answer, the operation its method and path name, the status among the
// declared ones, the content type, the body against the declared schema,
// and for a successful answer the request body against the request schema
// (a simulator that accepts what the document refuses does not conform
// either).
//
// A Checker wraps a handler (Wrap) or checks answers given to it (Check),
// and keeps counts and mismatches for the test or the program that reads
// them. It is a test tool: nothing the proxy is built from imports it.
package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// maxKept is how many mismatches a Checker keeps for Mismatches; Counts
// counts them all.
const maxKept = 200

// Answer is one request and the answer it got.
type Answer struct {
	Method    string
	Path      string // the request's path, as served: /api/...
	Query     url.Values
	ReqHeader http.Header
	ReqBody   []byte
	Status    int
	Header    http.Header
	Body      []byte
}

// Mismatch is one way an answer departs from the document. Operation is
// the operation id, "" when no operation matches the method and path.
type Mismatch struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Status    int    `json:"status"`
	Operation string `json:"operation"`
	Reason    string `json:"reason"`
}

// String returns the mismatch on one line.
func (m Mismatch) String() string {
	op := m.Operation
	if op == "" {
		op = "no operation"
	}
	return fmt.Sprintf("%s %s %d (%s): %s", m.Method, m.Path, m.Status, op, m.Reason)
}

// Counts sums up what a Checker saw. Operations counts the distinct
// operations answered, Answers the answers checked, Skipped the answers
// left unchecked (marked with apicsim.FaultHeader, shaped by a fault a test queued, or no answer at all: a dropped
// connection, a client that gave up), Mismatches every mismatch found.
type Counts struct {
	Operations int `json:"operations"`
	Answers    int `json:"answers"`
	Skipped    int `json:"skipped"`
	Mismatches int `json:"mismatches"`
}

// Checker checks answers against the fixture and keeps what it found. Its
// methods are safe for concurrent use.
type Checker struct {
	spec *spec

	mu         sync.Mutex
	answered   map[string]bool // operation ids answered at all
	served     map[string]bool // operation ids answered with a declared 2xx
	answers    int
	skipped    int
	mismatches int
	kept       []Mismatch
	onMismatch func(Mismatch)
}

// Load returns a Checker for the embedded fixture, which is compiled on
// the first call and shared by every Checker.
func Load() (*Checker, error) {
	sp, err := loadSpec()
	if err != nil {
		return nil, err
	}
	return &Checker{spec: sp, answered: make(map[string]bool), served: make(map[string]bool)}, nil
}

// OnMismatch makes the checker call f with each mismatch as it is found
// (f must be safe for concurrent use). Call it before the checker is used.
func (c *Checker) OnMismatch(f func(Mismatch)) {
	c.mu.Lock()
	c.onMismatch = f
	c.mu.Unlock()
}

// Operations returns the ids of every operation in the fixture, in its
// order.
func (c *Checker) Operations() []string {
	ids := make([]string, 0, len(c.spec.ops))
	for _, op := range c.spec.ops {
		ids = append(ids, op.ID)
	}
	return ids
}

// Served returns the ids of the operations answered with a declared 2xx
// status at least once, sorted.
func (c *Checker) Served() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.served))
}

// Counts returns the counts so far.
func (c *Checker) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Counts{Operations: len(c.answered), Answers: c.answers, Skipped: c.skipped, Mismatches: c.mismatches}
}

// Mismatches returns the mismatches found so far, in the order found: the
// first 200 of them (Counts has the number of all).
func (c *Checker) Mismatches() []Mismatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.kept)
}

// Check checks one answer, records it in the counts and returns its
// mismatches (none when it conforms or is not checked). Paths under
// /_sim/ are the simulator's controls and are not checked or counted.
func (c *Checker) Check(a Answer) []Mismatch {
	var parts []string
	var partsErr error
	if isMultipart(a.ReqHeader) && len(a.ReqBody) > 0 {
		parts, partsErr = partNames(a.ReqHeader.Get("Content-Type"), bytes.NewReader(a.ReqBody))
	}
	return c.check(a, requestBody{data: a.ReqBody, parts: parts, partsErr: partsErr, complete: true})
}

// requestBody is what the checker knows of a request's body: its bytes
// (JSON and YAML bodies) or its part names (multipart bodies, which can be
// too large to keep), and whether all of it was seen.
type requestBody struct {
	data     []byte
	parts    []string
	partsErr error
	complete bool
}

func (c *Checker) check(a Answer, body requestBody) []Mismatch {
	if strings.HasPrefix(a.Path, "/_sim/") {
		return nil
	}
	if a.Header.Get(apicsim.FaultHeader) != "" {
		c.mu.Lock()
		c.skipped++
		c.mu.Unlock()
		return nil
	}
	var (
		reasons []string
		opID    string
		matched []string // operations the answer conforms to
	)
	cands := c.spec.candidates(a.Method, a.Path)
	if len(cands) == 0 {
		reasons = unmatchedReasons(c.spec, a)
	} else {
		best := -1
		var bestReasons []string
		for i, op := range cands {
			r := op.check(a, body)
			if len(r) == 0 {
				matched = append(matched, op.ID)
			}
			if best < 0 || len(r) < len(bestReasons) {
				best, bestReasons = i, r
			}
		}
		if len(matched) == 0 {
			opID, reasons = cands[best].ID, bestReasons
			if len(cands) > 1 {
				ids := make([]string, len(cands))
				for i, op := range cands {
					ids[i] = op.ID
				}
				for i, r := range reasons {
					reasons[i] = fmt.Sprintf("%s (no operation of %s conforms)", r, strings.Join(ids, ", "))
				}
			}
		} else {
			opID = matched[0]
		}
	}
	ms := make([]Mismatch, 0, len(reasons))
	for _, r := range reasons {
		ms = append(ms, Mismatch{Method: a.Method, Path: a.Path, Status: a.Status, Operation: opID, Reason: r})
	}
	c.mu.Lock()
	c.answers++
	c.mismatches += len(ms)
	for _, m := range ms {
		if len(c.kept) < maxKept {
			c.kept = append(c.kept, m)
		}
	}
	if opID != "" {
		c.answered[opID] = true
	}
	if a.Status >= 200 && a.Status < 300 {
		for _, id := range matched {
			c.served[id] = true
		}
	}
	hook := c.onMismatch
	c.mu.Unlock()
	if hook != nil {
		for _, m := range ms {
			hook(m)
		}
	}
	return ms
}

// candidates returns the operations whose method and path template fit,
// keeping those with the most literal segments (a path such as
// /orgs/o/drafts/draft-apis/x fits both {draft-api-name} and
// {draft-api-id}, which are equally literal: both are kept).
func (sp *spec) candidates(method, path string) []*compiledOp {
	rest, ok := strings.CutPrefix(path, "/api/")
	if !ok {
		return nil
	}
	segs := strings.Split(rest, "/")
	var out []*compiledOp
	most := -1
	for _, op := range sp.ops {
		if op.Method != method || !op.matches(segs) {
			continue
		}
		switch {
		case op.literals > most:
			out, most = []*compiledOp{op}, op.literals
		case op.literals == most:
			out = append(out, op)
		}
	}
	return out
}

// unmatchedReasons checks an answer to a method and path the document
// does not declare: it must refuse, with a 4xx in API Connect's Error
// shape.
func unmatchedReasons(sp *spec, a Answer) []string {
	if a.Status < 400 || a.Status > 499 {
		return []string{fmt.Sprintf("the document declares no %s %s; want a 4xx answer in the Error shape, got status %d", a.Method, a.Path, a.Status)}
	}
	return bodyReasons("response body", compiledResponse{schema: sp.error, types: []string{"application/json", "application/yaml"}}, a.Header.Get("Content-Type"), a.Body)
}

// check returns the ways an answer departs from the operation.
func (op *compiledOp) check(a Answer, body requestBody) []string {
	key := strconv.Itoa(a.Status)
	resp, ok := op.responses[key]
	if !ok && a.Status >= 100 && a.Status <= 599 {
		key = key[:1] + "XX"
		resp, ok = op.responses[key]
	}
	if !ok {
		return []string{fmt.Sprintf("status %d is not declared; want one of %s", a.Status, strings.Join(slices.Sorted(maps.Keys(op.responses)), ", "))}
	}
	var reasons []string
	if resp.schema == nil {
		if len(a.Body) > 0 {
			reasons = append(reasons, fmt.Sprintf("status %d has no body in the document; got %d bytes", a.Status, len(a.Body)))
		}
	} else {
		reasons = bodyReasons("response body", resp, a.Header.Get("Content-Type"), a.Body)
	}
	if a.Status >= 200 && a.Status < 300 {
		reasons = append(reasons, op.requestReasons(a, body)...)
	}
	return reasons
}

// requestReasons checks the body of a request the simulator accepted.
func (op *compiledOp) requestReasons(a Answer, body requestBody) []string {
	ct := a.ReqHeader.Get("Content-Type")
	if len(body.data) == 0 && len(body.parts) == 0 && body.partsErr == nil {
		return nil // no body: the document requires none
	}
	if !body.complete {
		return nil // too large to keep whole: not checked
	}
	if op.Request == nil {
		return nil // the document does not say a stray body is refused
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(op.Request.Types, mt) {
		return []string{fmt.Sprintf("request Content-Type %q was accepted; the document takes %s", ct, strings.Join(op.Request.Types, ", "))}
	}
	if mt != "multipart/form-data" {
		return bodyReasons("request body", compiledResponse{schema: op.reqSchema, types: op.Request.Types}, ct, body.data)
	}
	if body.partsErr != nil {
		return []string{fmt.Sprintf("request body is not well-formed multipart/form-data (%v) and was accepted", body.partsErr)}
	}
	var reasons []string
	mp := op.Request.Multipart
	for _, name := range body.parts {
		if !slices.Contains(mp.Parts, name) {
			reasons = append(reasons, fmt.Sprintf("request part %q is not declared; want parts among %s", name, strings.Join(mp.Parts, ", ")))
		}
	}
	for _, name := range mp.Required {
		if !slices.Contains(body.parts, name) {
			reasons = append(reasons, fmt.Sprintf("request part %q is required and missing", name))
		}
	}
	return reasons
}

// bodyReasons checks a body's content type and decodes it (JSON, or YAML
// into JSON values) and validates it against resp's schema. what names
// the body in the reasons ("response body").
func bodyReasons(what string, resp compiledResponse, contentType string, data []byte) []string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || !slices.Contains(resp.types, mt) {
		return []string{fmt.Sprintf("%s Content-Type %q; want %s", what, contentType, strings.Join(resp.types, " or "))}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return []string{fmt.Sprintf("%s is empty; want a %s document", what, mt)}
	}
	var v any
	if mt == "application/yaml" {
		v, err = decodeYAML(data)
	} else {
		v, err = jsonschema.UnmarshalJSON(bytes.NewReader(data))
	}
	if err != nil {
		return []string{fmt.Sprintf("%s is not valid %s: %v", what, mt, err)}
	}
	return schemaReasons(what, resp.schema.Validate(v))
}

// decodeYAML decodes one YAML document into the values the schema library
// takes (map[string]any, []any, strings, numbers, bools, nil).
func decodeYAML(data []byte) (any, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return jsonValue(v)
}

func jsonValue(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			y, err := jsonValue(x)
			if err != nil {
				return nil, err
			}
			v[k] = y
		}
		return v, nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("mapping key %v is not a string", k)
			}
			y, err := jsonValue(x)
			if err != nil {
				return nil, err
			}
			m[ks] = y
		}
		return m, nil
	case []any:
		for i, x := range v {
			y, err := jsonValue(x)
			if err != nil {
				return nil, err
			}
			v[i] = y
		}
		return v, nil
	case nil, bool, string, int, int64, uint64, float64:
		return v, nil
	default:
		return nil, fmt.Errorf("value %v of type %T has no JSON form", v, v)
	}
}

var printer = message.NewPrinter(language.English)

// schemaReasons turns a validation error into one reason per failing
// field, each naming the field by its JSON pointer.
func schemaReasons(what string, err error) []string {
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []string{fmt.Sprintf("%s: %v", what, err)}
	}
	var out []string
	add := func(ptr, msg string) {
		r := what + ": " + msg
		if ptr != "" {
			r = what + " at " + ptr + ": " + msg
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, cause := range e.Causes {
				walk(cause)
			}
			return
		}
		ptr := pointer(e.InstanceLocation)
		switch k := e.ErrorKind.(type) {
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				add(ptr+"/"+escapeToken(p), fmt.Sprintf("undeclared property %q", p))
			}
		case *kind.Required:
			for _, p := range k.Missing {
				add(ptr+"/"+escapeToken(p), fmt.Sprintf("missing required property %q", p))
			}
		default:
			add(ptr, e.ErrorKind.LocalizedString(printer))
		}
	}
	walk(ve)
	return out
}

// pointer returns the JSON pointer of an instance location.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapeToken(t))
	}
	return b.String()
}

func escapeToken(t string) string {
	return strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
}

// isMultipart reports whether a request's Content-Type is multipart/form-data.
func isMultipart(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "multipart/form-data"
}

// partNames reads a multipart/form-data body and returns its part names,
// in order, discarding their contents.
func partNames(contentType string, r io.Reader) ([]string, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	if params["boundary"] == "" {
		return nil, errors.New("no boundary in the Content-Type")
	}
	mr := multipart.NewReader(r, params["boundary"])
	var names []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return names, err
		}
		names = append(names, p.FormName())
		if _, err := io.Copy(io.Discard, p); err != nil {
			return names, err
		}
	}
}
