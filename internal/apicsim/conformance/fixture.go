package conformance

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// fixtureJSON is the Provider API's operations and schemas as this project
// restates them (see README.md).
//
//go:embed provider.json
var fixtureJSON []byte

// fixtureURL names the fixture as a schema resource: the schemas' $refs
// ("#/schemas/Me") resolve inside it.
const fixtureURL = "mem://conformance/provider.json"

// fixture is provider.json as decoded.
type fixture struct {
	Source     string                     `json:"source"`
	Operations []operation                `json:"operations"`
	Schemas    map[string]json.RawMessage `json:"schemas"`
}

// operation is one method on one path template under /api.
type operation struct {
	ID        string              `json:"id"`
	Method    string              `json:"method"`
	Path      string              `json:"path"`
	Scope     string              `json:"scope"`
	Query     []string            `json:"query"`
	Request   *request            `json:"request"`
	Responses map[string]response `json:"responses"`
	Source    string              `json:"source,omitempty"`
	Note      string              `json:"note,omitempty"`
}

// request is what an operation accepts as a body: Schema for the JSON and
// YAML types, Multipart for multipart/form-data.
type request struct {
	Schema    string         `json:"schema,omitempty"`
	Multipart *multipartSpec `json:"multipart,omitempty"`
	Types     []string       `json:"types"`
}

// multipartSpec lists the part names an upload may have and must have.
type multipartSpec struct {
	Parts    []string `json:"parts"`
	Required []string `json:"required"`
}

// response is one declared status: its schema (nil: no body) and the
// content types it comes in.
type response struct {
	Schema *string  `json:"schema"`
	Types  []string `json:"types"`
}

// compiledOp is an operation ready to check answers against.
type compiledOp struct {
	operation
	segments  []string // of Path, without the leading "/"
	literals  int      // segments that are not {templates}
	reqSchema *jsonschema.Schema
	responses map[string]compiledResponse
}

type compiledResponse struct {
	schema *jsonschema.Schema // nil: no body
	types  []string
}

// spec is the compiled fixture, shared by every Checker.
type spec struct {
	ops   []*compiledOp
	error *jsonschema.Schema // the Error schema, for answers no operation matches
}

// loadSpec compiles the embedded fixture once.
var loadSpec = sync.OnceValues(func() (*spec, error) { return compile(fixtureJSON) })

// compile decodes and compiles a fixture, checking that every operation
// is well formed and every schema it names exists.
func compile(data []byte) (*spec, error) {
	var fx fixture
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fx); err != nil {
		return nil, fmt.Errorf("conformance fixture: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("conformance fixture: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(fixtureURL, doc); err != nil {
		return nil, fmt.Errorf("conformance fixture: %v", err)
	}
	schemas := make(map[string]*jsonschema.Schema)
	schema := func(name string) (*jsonschema.Schema, error) {
		if s, ok := schemas[name]; ok {
			return s, nil
		}
		if _, ok := fx.Schemas[name]; !ok {
			return nil, fmt.Errorf("no schema %q in schemas", name)
		}
		s, err := c.Compile(fixtureURL + "#/schemas/" + name)
		if err != nil {
			return nil, err
		}
		schemas[name] = s
		return s, nil
	}
	sp := &spec{}
	if sp.error, err = schema("Error"); err != nil {
		return nil, fmt.Errorf("conformance fixture: %v", err)
	}
	ids := make(map[string]bool)
	for _, o := range fx.Operations {
		op, err := compileOp(o, schema)
		if err != nil {
			return nil, fmt.Errorf("conformance fixture: operation %q (%s %s): %v", o.ID, o.Method, o.Path, err)
		}
		if ids[o.ID] {
			return nil, fmt.Errorf("conformance fixture: operation id %q is used twice", o.ID)
		}
		ids[o.ID] = true
		sp.ops = append(sp.ops, op)
	}
	return sp, nil
}

func compileOp(o operation, schema func(string) (*jsonschema.Schema, error)) (*compiledOp, error) {
	if o.ID == "" {
		return nil, fmt.Errorf("id: want a non-empty operation id")
	}
	if !strings.HasPrefix(o.Path, "/") {
		return nil, fmt.Errorf("path: want a template starting with /, got %q", o.Path)
	}
	switch o.Method {
	case "GET", "POST", "PUT", "PATCH", "DELETE":
	default:
		return nil, fmt.Errorf("method: want GET, POST, PUT, PATCH or DELETE, got %q", o.Method)
	}
	op := &compiledOp{operation: o, segments: strings.Split(o.Path[1:], "/"), responses: make(map[string]compiledResponse)}
	for _, seg := range op.segments {
		if seg == "" {
			return nil, fmt.Errorf("path: empty segment in %q", o.Path)
		}
		if !isTemplate(seg) {
			op.literals++
		}
	}
	if r := o.Request; r != nil {
		if len(r.Types) == 0 {
			return nil, fmt.Errorf("request.types: want at least one content type")
		}
		for _, t := range r.Types {
			switch {
			case t == "multipart/form-data" && r.Multipart == nil:
				return nil, fmt.Errorf("request.types: multipart/form-data needs request.multipart")
			case t != "multipart/form-data" && r.Schema == "":
				return nil, fmt.Errorf("request.types: %s needs request.schema", t)
			}
		}
		if r.Multipart != nil {
			for _, name := range r.Multipart.Required {
				if !slices.Contains(r.Multipart.Parts, name) {
					return nil, fmt.Errorf("request.multipart.required: %q is not among the parts", name)
				}
			}
		}
		if r.Schema != "" {
			s, err := schema(r.Schema)
			if err != nil {
				return nil, fmt.Errorf("request.schema: %v", err)
			}
			op.reqSchema = s
		}
	}
	if len(o.Responses) == 0 {
		return nil, fmt.Errorf("responses: want at least one status")
	}
	for code, resp := range o.Responses {
		if !validStatusKey(code) {
			return nil, fmt.Errorf("responses: want a status such as 200 or 4XX, got %q", code)
		}
		cr := compiledResponse{types: resp.Types}
		if resp.Schema != nil {
			if len(resp.Types) == 0 {
				return nil, fmt.Errorf("responses.%s.types: want at least one content type", code)
			}
			s, err := schema(*resp.Schema)
			if err != nil {
				return nil, fmt.Errorf("responses.%s.schema: %v", code, err)
			}
			cr.schema = s
		}
		op.responses[code] = cr
	}
	return op, nil
}

// validStatusKey reports whether k is a status (200) or a class (4XX).
func validStatusKey(k string) bool {
	if len(k) != 3 || k[0] < '1' || k[0] > '5' {
		return false
	}
	if k[1:] == "XX" {
		return true
	}
	return k[1] >= '0' && k[1] <= '9' && k[2] >= '0' && k[2] <= '9'
}

func isTemplate(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}'
}

// matches reports whether the segments of a path (under /api) fit the
// operation's template.
func (op *compiledOp) matches(segs []string) bool {
	if len(segs) != len(op.segments) {
		return false
	}
	for i, seg := range op.segments {
		if segs[i] == "" || (!isTemplate(seg) && seg != segs[i]) {
			return false
		}
	}
	return true
}
