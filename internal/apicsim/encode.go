package apicsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Media types the platform API speaks: every answer is offered in JSON and
// YAML, chosen by Accept, and request bodies are JSON or YAML by
// Content-Type where the document offers both.
const (
	typeJSON = "application/json"
	typeYAML = "application/yaml"
)

// yamlTypes are the names clients use for YAML in Accept.
var yamlTypes = map[string]bool{typeYAML: true, "application/x-yaml": true, "text/yaml": true, "text/x-yaml": true}

// isJSONType reports whether the media type mt is JSON.
func isJSONType(mt string) bool { return mt == typeJSON || strings.HasSuffix(mt, "+json") }

// answerType chooses the answer's media type from the request's Accept
// header: YAML when it prefers YAML to JSON, JSON otherwise (also when
// Accept names neither, as API Connect does).
func answerType(r *http.Request) string {
	accept := r.Header.Values("Accept")
	if len(accept) == 0 {
		return typeJSON
	}
	bestJSON, bestYAML := -1.0, -1.0
	for _, h := range accept {
		for _, part := range strings.Split(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
			switch {
			case yamlTypes[mt]:
				bestYAML = max(bestYAML, q)
			case isJSONType(mt), mt == "*/*", mt == "application/*":
				bestJSON = max(bestJSON, q)
			}
		}
	}
	if bestYAML > 0 && bestYAML > bestJSON {
		return typeYAML
	}
	return typeJSON
}

// reply writes v with status in the media type the request accepts.
func reply(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	ct := typeJSON
	if err == nil && answerType(r) == typeYAML {
		body, err = jsonToYAML(body)
		ct = typeYAML
	}
	if err != nil {
		status, ct = http.StatusInternalServerError, typeJSON
		body = []byte(`{"status":500,"message":["could not encode the response"]}`)
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError answers with API Connect's error shape: status, message
// (always an array) and, when given, errors.
func writeError(w http.ResponseWriter, r *http.Request, status int, msg ...string) {
	reply(w, r, status, apiError{Status: status, Message: msg})
}

// apiError is API Connect's error body.
type apiError struct {
	Status  int      `json:"status"`
	Message []string `json:"message"`
	Errors  []string `json:"errors,omitempty"`
}

// requestError is a refused request: the status and the message to answer.
type requestError struct {
	status int
	msg    string
}

func badRequest(format string, args ...any) *requestError {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// jsonToYAML re-encodes a JSON document as YAML, keeping integers integers.
func jsonToYAML(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return yaml.Marshal(fromJSONNumbers(v))
}

// fromJSONNumbers replaces json.Number values by int64 or float64.
func fromJSONNumbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = fromJSONNumbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = fromJSONNumbers(e)
		}
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	}
	return v
}

// readDoc reads a request body of at most limit bytes that holds one JSON
// or, when yamlOK, one YAML object, chosen by Content-Type, and returns it
// as JSON values. An empty body is an empty object.
func readDoc(r *http.Request, limit int64, yamlOK bool) (map[string]any, *requestError) {
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("could not read the request body")
	}
	if int64(len(data)) > limit {
		return nil, &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes", limit)}
	}
	return parseDoc(r.Header.Get("Content-Type"), data, yamlOK)
}

// parseDoc parses data, a JSON or, when yamlOK, a YAML object, chosen by
// the Content-Type ct (empty means JSON).
func parseDoc(ct string, data []byte, yamlOK bool) (map[string]any, *requestError) {
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		mt = typeJSON
	case err != nil:
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not a media type", ct)}
	}
	// Bodies are what the document declares, exactly: application/json,
	// and application/yaml where it offers it.
	isYAML := mt == typeYAML
	if mt != typeJSON && !(yamlOK && isYAML) {
		want := typeJSON
		if yamlOK {
			want += " or " + typeYAML
		}
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported; send %s", mt, want)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return map[string]any{}, nil
	}
	if isYAML {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, badRequest("the request body is not valid YAML: %v", err)
		}
		// A round trip through JSON gives the same values a JSON body
		// would, and refuses what JSON cannot hold (maps with non-string
		// keys, for one).
		b, err := json.Marshal(v)
		if err != nil {
			return nil, badRequest("the request body is not a YAML mapping of string keys")
		}
		data = b
	}
	kind := "JSON"
	if isYAML {
		kind = "YAML"
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, badRequest("the request body is not a %s object", kind)
	}
	if dec.More() {
		return nil, badRequest("the request body has data after the %s object", kind)
	}
	return doc, nil
}

// decodeDoc decodes doc into dst, a pointer to a struct whose json tags
// are the schema's properties, refusing undeclared properties and values
// of the wrong type with a message that names the property.
func decodeDoc(doc map[string]any, dst any) *requestError {
	data, err := json.Marshal(doc)
	if err != nil {
		return badRequest("the request body could not be read: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err = dec.Decode(dst)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return badRequest("property %s must be %s, got %s", typeErr.Field, jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("unknown property %s is not allowed", name)
	}
	return badRequest("the request body is not valid: %v", err)
}

// jsonTypeName names a Go kind as the schema's type.
func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return kind
}

// checkEnum refuses a value of property name that is set and not one of
// allowed.
func checkEnum(name, value string, allowed ...string) *requestError {
	if value == "" {
		return nil
	}
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return badRequest("property %s must be one of %s, got %q", name, strings.Join(allowed, ", "), value)
}

// requireProps refuses a request that lacks any of the named properties.
func requireProps(doc map[string]any, names ...string) *requestError {
	var missing []string
	for _, n := range names {
		if v, ok := doc[n]; !ok || v == nil || v == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return badRequest("missing required properties: %s", strings.Join(missing, ", "))
	}
	return nil
}

// toDoc turns a resource into JSON values, for fields selection.
func toDoc(v any) map[string]any {
	data, err := json.Marshal(v)
	if err != nil {
		return map[string]any{}
	}
	var doc map[string]any
	_ = json.Unmarshal(data, &doc)
	return doc
}

// selectFields keeps the properties the query's fields parameter names
// (comma-separated), or all when it names none.
func selectFields(doc map[string]any, q url.Values) map[string]any {
	f := q.Get("fields")
	if f == "" {
		return doc
	}
	sel := make(map[string]any)
	for _, k := range strings.Split(f, ",") {
		k = strings.TrimSpace(k)
		if v, ok := doc[k]; ok {
			sel[k] = v
		}
	}
	return sel
}

// replyOne answers one resource, honouring fields.
func replyOne(w http.ResponseWriter, r *http.Request, status int, v any) {
	reply(w, r, status, selectFields(toDoc(v), r.URL.Query()))
}

// list is a collection's answer.
type list struct {
	TotalResults int              `json:"total_results"`
	Results      []map[string]any `json:"results"`
}

// viewsOf returns the view of each item, in their order; the views are
// taken while the simulator's lock is held, so that replyList can encode
// them after it is released.
func viewsOf[T, V any](items []T, view func(T) V) []V {
	views := make([]V, 0, len(items))
	for _, it := range items {
		views = append(views, view(it))
	}
	return views
}

// replyList answers a collection of resources in their order, honouring
// offset, limit and fields; total_results counts them all.
func replyList[T any](w http.ResponseWriter, r *http.Request, items []T) {
	q := r.URL.Query()
	offset, err := queryInt(q, "offset")
	if err != nil {
		writeError(w, r, err.status, err.msg)
		return
	}
	limit, err := queryInt(q, "limit")
	if err != nil {
		writeError(w, r, err.status, err.msg)
		return
	}
	out := list{TotalResults: len(items), Results: []map[string]any{}}
	start := min(offset, len(items))
	end := len(items)
	if q.Has("limit") {
		end = min(start+limit, len(items))
	}
	for _, it := range items[start:end] {
		out.Results = append(out.Results, selectFields(toDoc(it), q))
	}
	reply(w, r, http.StatusOK, out)
}

// queryInt reads a non-negative integer query parameter; absent is 0.
func queryInt(q url.Values, name string) (int, *requestError) {
	if !q.Has(name) {
		return 0, nil
	}
	n, err := strconv.Atoi(q.Get(name))
	if err != nil || n < 0 {
		return 0, badRequest("query parameter %s must be a non-negative integer, got %q", name, q.Get(name))
	}
	return n, nil
}
