package apicsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// draftKind is what differs between draft APIs and draft products, which
// the platform API serves alike.
type draftKind struct {
	typ        string // the type field: draft_api or draft_product
	collection string // the path segment: draft-apis or draft-products
	docKey     string // the property holding the document
	noun       string // for messages
	part       string // the multipart part holding the document
	drafts     func(*orgState) *[]*draftState
	input      func(doc map[string]any) (draftInput, *requestError)
}

var (
	draftAPIs = &draftKind{
		typ: "draft_api", collection: "draft-apis", docKey: "draft_api", noun: "draft API", part: "openapi",
		drafts: func(o *orgState) *[]*draftState { return &o.draftAPIs },
		input:  draftAPIInput,
	}
	draftProducts = &draftKind{
		typ: "draft_product", collection: "draft-products", docKey: "draft_product", noun: "draft product", part: "product",
		drafts: func(o *orgState) *[]*draftState { return &o.draftProducts },
		input:  draftProductInput,
	}
)

// draftState is a draft API or product: its document and what is derived
// from it.
type draftState struct {
	kind             *draftKind
	org              *orgState
	id               string
	in               draftInput
	created, updated time.Time
}

// draftInput is what a create or update request gives.
type draftInput struct {
	doc            map[string]any // the OpenAPI or product document; nil: unchanged
	name, version  string         // from the document's info
	title, summary *string
	metadata       map[string]string
	// Draft APIs only.
	gatewayType, oaiVersion string
	// Draft products only.
	gatewayTypes []string
}

func (d *draftState) url(r *http.Request) string {
	return d.org.url(r) + "/drafts/" + d.kind.collection + "/" + d.id
}

// view is the DraftAPI or DraftProduct schema.
func (d *draftState) view(r *http.Request) map[string]any {
	v := map[string]any{
		"type": d.kind.typ, "api_version": apiVersion, "id": d.id, "name": d.in.name, "version": d.in.version,
		"title": deref(d.in.title), d.kind.docKey: d.in.doc, "org_url": d.org.url(r),
		"created_at": timestamp(d.created), "updated_at": timestamp(d.updated), "url": d.url(r),
	}
	if d.in.summary != nil && *d.in.summary != "" {
		v["summary"] = *d.in.summary
	}
	if len(d.in.metadata) > 0 {
		v["metadata"] = d.in.metadata
	}
	if d.kind == draftAPIs {
		v["api_type"] = "rest"
		v["gateway_type"] = d.in.gatewayType
		v["oai_version"] = d.in.oaiVersion
		v["document_specification"] = d.in.oaiVersion
	} else {
		v["gateway_types"] = d.in.gatewayTypes
	}
	return v
}

// gatewayTypes are the document's gateway types.
var gatewayTypes = []string{"datapower-gateway", "datapower-api-gateway", "event-gateway", "datapower-nano-gateway", "wm-api-gateway"}

// draftAPIDoc is the DraftAPI schema as a request body.
type draftAPIDoc struct {
	DraftAPI              map[string]any    `json:"draft_api"`
	Name                  string            `json:"name"`
	Version               string            `json:"version"`
	Title                 *string           `json:"title"`
	Summary               *string           `json:"summary"`
	Metadata              map[string]string `json:"metadata"`
	APIType               string            `json:"api_type"`
	GatewayType           string            `json:"gateway_type"`
	OAIVersion            string            `json:"oai_version"`
	DocumentSpecification string            `json:"document_specification"`
	Enforced              *bool             `json:"enforced"`
	RemoteAPI             map[string]any    `json:"remote_api"`
	WSDL                  map[string]any    `json:"wsdl"`
	OrgURL                string            `json:"org_url"` // derived, ignored
	readOnly
}

func draftAPIInput(doc map[string]any) (draftInput, *requestError) {
	var d draftAPIDoc
	if e := decodeDoc(doc, &d); e != nil {
		return draftInput{}, e
	}
	for _, c := range []struct{ name, val string }{{"api_type", d.APIType}, {"gateway_type", d.GatewayType}, {"oai_version", d.OAIVersion}, {"document_specification", d.DocumentSpecification}} {
		var e *requestError
		switch c.name {
		case "api_type":
			e = checkEnum(c.name, c.val, "rest", "wsdl", "graphql", "asyncapi")
		case "gateway_type":
			e = checkEnum(c.name, c.val, gatewayTypes...)
		case "oai_version":
			e = checkEnum(c.name, c.val, "openapi2", "openapi3")
		default:
			e = checkEnum(c.name, c.val, "asyncapi2.0", "asyncapi2.1", "openapi2", "openapi3")
		}
		if e != nil {
			return draftInput{}, e
		}
	}
	if d.APIType != "" && d.APIType != "rest" {
		return draftInput{}, badRequest("api_type %s is not served by this simulator; send an OpenAPI document (rest)", d.APIType)
	}
	in := draftInput{title: d.Title, summary: d.Summary, metadata: d.Metadata, gatewayType: d.GatewayType}
	if d.DraftAPI != nil {
		api, e := apiDocument(d.DraftAPI, "draft_api")
		if e != nil {
			return draftInput{}, e
		}
		in.doc, in.name, in.version, in.oaiVersion = d.DraftAPI, api.name, api.version, api.oaiVersion
		if in.title == nil {
			in.title = &api.title
		}
		if in.gatewayType == "" {
			in.gatewayType = api.gatewayType
		}
	}
	return in, nil
}

// draftProductDoc is the DraftProduct schema as a request body.
type draftProductDoc struct {
	DraftProduct map[string]any    `json:"draft_product"`
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Title        *string           `json:"title"`
	Summary      *string           `json:"summary"`
	Metadata     map[string]string `json:"metadata"`
	GatewayTypes []string          `json:"gateway_types"`
	PortalTypes  []string          `json:"portal_types"`
	Catalogs     []map[string]any  `json:"catalogs"`
	ProductKind  map[string]any    `json:"product_kind"`
	OrgURL       string            `json:"org_url"` // derived, ignored
	readOnly
}

func draftProductInput(doc map[string]any) (draftInput, *requestError) {
	var d draftProductDoc
	if e := decodeDoc(doc, &d); e != nil {
		return draftInput{}, e
	}
	for _, g := range d.GatewayTypes {
		if e := checkEnum("gateway_types", g, gatewayTypes...); e != nil {
			return draftInput{}, e
		}
	}
	for _, p := range d.PortalTypes {
		if e := checkEnum("portal_types", p, "cms", "devportal"); e != nil {
			return draftInput{}, e
		}
	}
	in := draftInput{title: d.Title, summary: d.Summary, metadata: d.Metadata, gatewayTypes: d.GatewayTypes}
	if d.DraftProduct != nil {
		p, e := productDocument(d.DraftProduct, "draft_product")
		if e != nil {
			return draftInput{}, e
		}
		in.doc, in.name, in.version = d.DraftProduct, p.name, p.version
		if in.title == nil {
			in.title = &p.title
		}
		if in.gatewayTypes == nil {
			in.gatewayTypes = p.gateways
		}
	}
	return in, nil
}

// apiInfo is what an OpenAPI document says of itself.
type apiInfo struct {
	name, version, title    string
	oaiVersion, gatewayType string
	basePath                string
}

// apiDocument reads an OpenAPI 2 or 3 document: info.title and
// info.version are required; the name is info.x-ibm-name, or the title
// made a name.
func apiDocument(doc map[string]any, field string) (apiInfo, *requestError) {
	var a apiInfo
	switch {
	case doc["swagger"] != nil:
		if fmt.Sprint(doc["swagger"]) != "2.0" {
			return a, badRequest("%s.swagger must be \"2.0\", got %v", field, doc["swagger"])
		}
		a.oaiVersion = "openapi2"
	case doc["openapi"] != nil:
		if !strings.HasPrefix(fmt.Sprint(doc["openapi"]), "3.") {
			return a, badRequest("%s.openapi must be a 3.x version, got %v", field, doc["openapi"])
		}
		a.oaiVersion = "openapi3"
	default:
		return a, badRequest("%s must be an OpenAPI document, with swagger: \"2.0\" or openapi: 3.x", field)
	}
	info, _ := doc["info"].(map[string]any)
	a.title, _ = info["title"].(string)
	a.version = scalar(info["version"])
	a.name, _ = info["x-ibm-name"].(string)
	if a.title == "" || a.version == "" {
		return a, badRequest("%s.info.title and %s.info.version are required", field, field)
	}
	if a.name == "" {
		a.name = nameOf(a.title)
	}
	if e := checkName(field+".info.x-ibm-name", a.name); e != nil {
		return a, e
	}
	a.gatewayType = "datapower-api-gateway"
	if cfg, ok := doc["x-ibm-configuration"].(map[string]any); ok {
		if g, ok := cfg["gateway"].(string); ok && slices.Contains(gatewayTypes, g) {
			a.gatewayType = g
		}
	}
	a.basePath, _ = doc["basePath"].(string)
	return a, nil
}

// productInfo is what a product document says of itself.
type productInfo struct {
	name, version, title string
	gateways             []string
	apis                 map[string]map[string]any // the apis entries by key
	plans                []planInfo
}

type planInfo struct {
	name, title string
	apis        []string // keys of product apis; all when nil
}

// productDocument reads a product document (product: 1.0.0): info.name
// and info.version are required.
func productDocument(doc map[string]any, field string) (productInfo, *requestError) {
	var p productInfo
	if scalar(doc["product"]) != "1.0.0" {
		return p, badRequest("%s.product must be \"1.0.0\", the product document's version", field)
	}
	info, _ := doc["info"].(map[string]any)
	p.name, _ = info["name"].(string)
	p.version = scalar(info["version"])
	p.title, _ = info["title"].(string)
	if p.name == "" || p.version == "" {
		return p, badRequest("%s.info.name and %s.info.version are required", field, field)
	}
	if e := checkName(field+".info.name", p.name); e != nil {
		return p, e
	}
	if p.title == "" {
		p.title = p.name
	}
	if gws, ok := doc["gateways"].([]any); ok {
		for _, g := range gws {
			if gs, _ := g.(string); slices.Contains(gatewayTypes, gs) {
				p.gateways = append(p.gateways, gs)
			} else {
				return p, badRequest("%s.gateways: %v is not one of %s", field, g, strings.Join(gatewayTypes, ", "))
			}
		}
	}
	if p.gateways == nil {
		p.gateways = []string{"datapower-api-gateway"}
	}
	p.apis = make(map[string]map[string]any)
	if apis, ok := doc["apis"].(map[string]any); ok {
		for k, v := range apis {
			ref, ok := v.(map[string]any)
			if !ok {
				return p, badRequest("%s.apis.%s must be an object with $ref or name", field, k)
			}
			p.apis[k] = ref
		}
	}
	plans, _ := doc["plans"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(plans)) {
		pl, _ := plans[name].(map[string]any)
		pi := planInfo{name: name}
		pi.title, _ = pl["title"].(string)
		if pi.title == "" {
			pi.title = name
		}
		if apis, ok := pl["apis"].(map[string]any); ok {
			pi.apis = slices.Sorted(maps.Keys(apis))
			for _, k := range pi.apis {
				if p.apis[k] == nil {
					return p, badRequest("%s.plans.%s.apis names %s, which is not in %s.apis", field, name, k, field)
				}
			}
		}
		p.plans = append(p.plans, pi)
	}
	if len(p.plans) == 0 {
		p.plans = []planInfo{{name: "default-plan", title: "Default Plan"}}
	}
	return p, nil
}

// scalar gives a YAML scalar as a string: version: 1.0 is a number there.
func scalar(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case json.Number:
		return t.String()
	default:
		return fmt.Sprint(t)
	}
}

// nameOf makes a title a resource name: lowercase, dashes for the rest.
func nameOf(title string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(title) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// readDraft reads a draft's create or update request: the schema's object
// in JSON or YAML, or a multipart form whose part holds the document.
func (k *draftKind) readDraft(r *http.Request) (draftInput, *requestError) {
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		doc, e := readDocumentPart(r, params["boundary"], k.part, k == draftProducts)
		if e != nil {
			return draftInput{}, e
		}
		return k.input(map[string]any{k.docKey: doc})
	}
	doc, e := readDoc(r, 16<<20, k == draftAPIs)
	if e != nil {
		return draftInput{}, e
	}
	bare := doc["swagger"] != nil || doc["openapi"] != nil
	if k == draftProducts {
		bare = doc["product"] != nil
	}
	if bare && doc[k.docKey] == nil {
		// The document's examples send the bare document, its schema
		// refuses it; the schema is what a server validates.
		return draftInput{}, badRequest("the body is a bare document: send it as the %s property, or as the %s part of a multipart/form-data body", k.docKey, k.part)
	}
	return k.input(doc)
}

// readDocumentPart reads a multipart form of document parts and returns
// the part named want, parsed as YAML or JSON. Parts the schema declares
// (openapi, wsdl, metadata, visibility, product when products is set) are
// allowed; others are refused.
func readDocumentPart(r *http.Request, boundary, want string, products bool) (map[string]any, *requestError) {
	if boundary == "" {
		return nil, badRequest("a multipart/form-data body needs a boundary")
	}
	declared := []string{"openapi", "wsdl"}
	if products {
		declared = append(declared, "product", "metadata", "visibility")
	}
	mr := multipart.NewReader(io.LimitReader(r.Body, 64<<20), boundary)
	var doc map[string]any
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, badRequest("malformed multipart body: %v", err)
		}
		name := part.FormName()
		if !slices.Contains(declared, name) {
			return nil, badRequest("multipart part %q is not one of %s", name, strings.Join(declared, ", "))
		}
		data, err := io.ReadAll(io.LimitReader(part, 16<<20))
		if err != nil {
			return nil, badRequest("malformed multipart body: %v", err)
		}
		if name == want && doc == nil {
			d, e := parseDocument(name, data)
			if e != nil {
				return nil, e
			}
			doc = d
		}
	}
	if doc == nil {
		return nil, badRequest("the multipart body has no %s part", want)
	}
	return doc, nil
}

// parseDocument parses a YAML (or JSON, which is YAML) document of a
// multipart part into JSON values.
func parseDocument(part string, data []byte) (map[string]any, *requestError) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, badRequest("part %s is not YAML or JSON: %v", part, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, badRequest("part %s is not a mapping of string keys", part)
	}
	var doc map[string]any
	if json.Unmarshal(b, &doc) != nil || doc == nil {
		return nil, badRequest("part %s is not a document (a mapping)", part)
	}
	return doc, nil
}

// taken reports whether another draft of the org has name and version.
func (k *draftKind) taken(o *orgState, self *draftState, name, version string) bool {
	return slices.ContainsFunc(*k.drafts(o), func(d *draftState) bool {
		return d != self && d.in.name == name && d.in.version == version
	})
}

func (s *Server) createDraft(k *draftKind) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		in, e := k.readDraft(r)
		if e == nil && in.doc == nil {
			e = badRequest("missing required properties: %s (the document)", k.docKey)
		}
		if e != nil {
			writeError(w, r, e.status, e.msg)
			return
		}
		o := s.lockedOrg(w, r, c)
		if o == nil {
			return
		}
		if k.taken(o, nil, in.name, in.version) {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A %s named %s with version %s already exists.", k.noun, in.name, in.version))
			return
		}
		now := s.now()
		d := &draftState{kind: k, org: o, id: randomID(), in: in, created: now, updated: now}
		*k.drafts(o) = append(*k.drafts(o), d)
		v := d.view(r)
		s.mu.Unlock()
		reply(w, r, http.StatusCreated, v)
	}
}

func (s *Server) listDrafts(k *draftKind) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		o := s.lockedOrg(w, r, c)
		if o == nil {
			return
		}
		views := viewsOf(*k.drafts(o), func(d *draftState) map[string]any { return d.view(r) })
		s.mu.Unlock()
		replyList(w, r, views)
	}
}

// getDraft answers {ref} (the draft with that id, or those with that
// name) and {name}/{version}.
func (s *Server) getDraft(k *draftKind) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		o := s.lockedOrg(w, r, c)
		if o == nil {
			return
		}
		a := answerVersioned(*k.drafts(o), c, func(d *draftState) any { return d.view(r) }, k.noun, "")
		s.mu.Unlock()
		a.reply(w, r, c)
	}
}

func (s *Server) updateDraft(k *draftKind) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		in, e := k.readDraft(r)
		if e != nil {
			writeError(w, r, e.status, e.msg)
			return
		}
		o := s.lockedOrg(w, r, c)
		if o == nil {
			return
		}
		d, _, found := findVersioned(*k.drafts(o), c)
		if !found {
			s.mu.Unlock()
			notFound(w, r, c, k.noun, "")
			return
		}
		next := d.in
		if in.doc != nil {
			next.doc, next.name, next.version, next.oaiVersion = in.doc, in.name, in.version, in.oaiVersion
		}
		if in.title != nil {
			next.title = in.title
		}
		if in.summary != nil {
			next.summary = in.summary
		}
		if in.metadata != nil {
			next.metadata = in.metadata
		}
		if in.gatewayType != "" {
			next.gatewayType = in.gatewayType
		}
		if in.gatewayTypes != nil {
			next.gatewayTypes = in.gatewayTypes
		}
		if k.taken(o, d, next.name, next.version) {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A %s named %s with version %s already exists.", k.noun, next.name, next.version))
			return
		}
		d.in, d.updated = next, s.now()
		v := d.view(r)
		s.mu.Unlock()
		reply(w, r, http.StatusOK, v)
	}
}

// deleteDraft deletes the draft with the id {ref} or with {name} and
// {version} (answering it), or every version of the name {ref} (answering
// 204).
func (s *Server) deleteDraft(k *draftKind) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		o := s.lockedOrg(w, r, c)
		if o == nil {
			return
		}
		one, byName, found := findVersioned(*k.drafts(o), c)
		if !found && len(byName) == 0 {
			s.mu.Unlock()
			notFound(w, r, c, k.noun, "")
			return
		}
		var v map[string]any
		if found {
			v = one.view(r)
			byName = []*draftState{one}
		}
		*k.drafts(o) = slices.DeleteFunc(*k.drafts(o), func(d *draftState) bool { return slices.Contains(byName, d) })
		s.mu.Unlock()
		if !found {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		reply(w, r, http.StatusOK, v)
	}
}
