package apicsim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Headers of a publish answer that tell what the simulator received, so
// that a test can check that a body arrived byte for byte. They are the
// simulator's own; API Connect does not send them.
const (
	ReceivedBytesHeader = "Apicsim-Received-Bytes"
	ReceivedSHA256      = "Apicsim-Received-Sha256"
)

// Publish limits: a product or OpenAPI part is parsed, so it is bounded;
// a wsdl part (a WSDL or a zip of them) is read to its end, not kept, so
// it may be of any size.
const maxDocumentPart = 16 << 20

// productState is a product published in a catalog.
type productState struct {
	catalog          *catalogState
	id               string
	info             productInfo
	doc              map[string]any
	apis             []*apiState // in the order of info.apis keys
	apiKeys          []string    // the product document's keys of apis
	created, updated time.Time
}

// apiState is an API published in a catalog, by the products that name it.
type apiState struct {
	catalog          *catalogState
	id               string
	info             apiInfo
	doc              map[string]any
	created, updated time.Time
}

func (p *productState) url(r *http.Request) string { return p.catalog.url(r) + "/products/" + p.id }
func (a *apiState) url(r *http.Request) string     { return a.catalog.url(r) + "/apis/" + a.id }

// productView is the Product schema.
type productView struct {
	Type         string            `json:"type"`
	APIVersion   string            `json:"api_version"`
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Title        string            `json:"title"`
	State        string            `json:"state"`
	Scope        string            `json:"scope"`
	GatewayTypes []string          `json:"gateway_types"`
	APIs         []productAPIView  `json:"apis"`
	Plans        []productPlanView `json:"plans"`
	APIURLs      []string          `json:"api_urls"`
	Product      map[string]any    `json:"product"`
	CatalogURL   string            `json:"catalog_url"`
	OrgURL       string            `json:"org_url"`
	CreatedAt    string            `json:"created_at"`
	UpdatedAt    string            `json:"updated_at"`
	URL          string            `json:"url"`
}

// productAPIView is an entry of Product's apis.
type productAPIView struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Title   string `json:"title"`
	Version string `json:"version"`
	State   string `json:"state,omitempty"`
	URL     string `json:"url"`
}

type productPlanView struct {
	Name  string           `json:"name"`
	Title string           `json:"title"`
	APIs  []productAPIView `json:"apis"`
}

func (a *apiState) ref(r *http.Request, state string) productAPIView {
	return productAPIView{ID: a.id, Name: a.info.name, Title: a.info.title, Version: a.info.version, State: state, URL: a.url(r)}
}

func (p *productState) view(r *http.Request) productView {
	v := productView{
		Type: "product", APIVersion: apiVersion, ID: p.id, Name: p.info.name, Version: p.info.version,
		Title: p.info.title, State: "published", Scope: "catalog", GatewayTypes: p.info.gateways,
		APIs: []productAPIView{}, Plans: []productPlanView{}, APIURLs: []string{}, Product: p.doc,
		CatalogURL: p.catalog.url(r), OrgURL: p.catalog.org.url(r),
		CreatedAt: timestamp(p.created), UpdatedAt: timestamp(p.updated), URL: p.url(r),
	}
	for _, a := range p.apis {
		v.APIs = append(v.APIs, a.ref(r, "online"))
		v.APIURLs = append(v.APIURLs, a.url(r))
	}
	for _, pl := range p.info.plans {
		pv := productPlanView{Name: pl.name, Title: pl.title, APIs: []productAPIView{}}
		for i, a := range p.apis {
			if pl.apis == nil || slices.Contains(pl.apis, p.apiKeys[i]) {
				pv.APIs = append(pv.APIs, a.ref(r, ""))
			}
		}
		v.Plans = append(v.Plans, pv)
	}
	return v
}

// apiView is the API schema.
type apiView struct {
	Type                  string   `json:"type"`
	APIVersion            string   `json:"api_version"`
	ID                    string   `json:"id"`
	Name                  string   `json:"name"`
	Version               string   `json:"version"`
	Title                 string   `json:"title"`
	State                 string   `json:"state"`
	APIType               string   `json:"api_type"`
	GatewayType           string   `json:"gateway_type"`
	OAIVersion            string   `json:"oai_version"`
	DocumentSpecification string   `json:"document_specification"`
	BasePaths             []string `json:"base_paths,omitempty"`
	Scope                 string   `json:"scope"`
	ProductURLs           []string `json:"product_urls"`
	CatalogURL            string   `json:"catalog_url"`
	OrgURL                string   `json:"org_url"`
	CreatedAt             string   `json:"created_at"`
	UpdatedAt             string   `json:"updated_at"`
	URL                   string   `json:"url"`
}

func (a *apiState) view(r *http.Request) apiView {
	v := apiView{
		Type: "api", APIVersion: apiVersion, ID: a.id, Name: a.info.name, Version: a.info.version,
		Title: a.info.title, State: "online", APIType: "rest", GatewayType: a.info.gatewayType,
		OAIVersion: a.info.oaiVersion, DocumentSpecification: a.info.oaiVersion, Scope: "catalog",
		ProductURLs: []string{}, CatalogURL: a.catalog.url(r), OrgURL: a.catalog.org.url(r),
		CreatedAt: timestamp(a.created), UpdatedAt: timestamp(a.updated), URL: a.url(r),
	}
	if a.info.basePath != "" {
		v.BasePaths = []string{a.info.basePath}
	}
	for _, p := range a.catalog.products {
		if slices.Contains(p.apis, a) {
			v.ProductURLs = append(v.ProductURLs, p.url(r))
		}
	}
	return v
}

// publishParts are the parts of a publish upload the document declares.
var publishParts = []string{"product", "openapi", "wsdl", "metadata", "gateway_service_urls"}

// uploadedAPI is an OpenAPI part of a publish upload.
type uploadedAPI struct {
	filename string
	info     apiInfo
	doc      map[string]any
}

// publish takes a multipart upload of a product document and the OpenAPI
// documents it names, and publishes them in the catalog, answering the
// Product. The whole body is read as it streams, whatever its size, and
// its byte count and SHA-256 are answered in headers.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, c *call) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeError(w, r, http.StatusBadRequest, "publish takes multipart/form-data with a boundary, and product and openapi parts")
		return
	}
	h := sha256.New()
	counter := &countingWriter{}
	tee := io.TeeReader(r.Body, io.MultiWriter(h, counter))
	var (
		product *productInfo
		prodDoc map[string]any
		apis    []uploadedAPI
		fail    *requestError
	)
	mr := multipart.NewReader(tee, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			return
		}
		name := part.FormName()
		if fail == nil && !slices.Contains(publishParts, name) {
			fail = badRequest("multipart part %q is not one of %s", name, strings.Join(publishParts, ", "))
		}
		if fail != nil || (name != "product" && name != "openapi") {
			// Read on, so the whole body is counted; keep nothing.
			if _, err := io.Copy(io.Discard, part); err != nil {
				writeError(w, r, http.StatusBadRequest, "malformed multipart body: "+err.Error())
				return
			}
			continue
		}
		data, err := io.ReadAll(io.LimitReader(part, maxDocumentPart+1))
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			return
		}
		if len(data) > maxDocumentPart {
			fail = &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("part %s (%s) is larger than %d MiB", name, part.FileName(), maxDocumentPart>>20)}
			_, _ = io.Copy(io.Discard, part)
			continue
		}
		doc, e := parseDocument(name, data)
		if e != nil {
			fail = e
			continue
		}
		switch {
		case name == "product" && product != nil:
			fail = badRequest("publish takes one product part")
		case name == "product":
			p, e := productDocument(doc, "product")
			product, prodDoc, fail = &p, doc, e
		default:
			a, e := apiDocument(doc, "openapi")
			apis, fail = append(apis, uploadedAPI{filename: part.FileName(), info: a, doc: doc}), e
		}
	}
	// Count the epilogue too, so the hash covers the body byte for byte.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		writeError(w, r, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	w.Header().Set(ReceivedBytesHeader, strconv.FormatInt(counter.n, 10))
	w.Header().Set(ReceivedSHA256, hex.EncodeToString(h.Sum(nil)))
	if fail == nil && product == nil {
		fail = badRequest("missing required part: product")
	}
	if fail == nil && len(apis) == 0 {
		fail = badRequest("missing required part: openapi")
	}
	var keys []string
	var named []uploadedAPI
	if fail == nil {
		keys, named, fail = resolveProductAPIs(product, apis)
	}
	if fail != nil {
		writeError(w, r, fail.status, fail.msg)
		return
	}

	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	now := s.now()
	p := &productState{catalog: cat, id: randomID(), info: *product, doc: prodDoc, apiKeys: keys, created: now, updated: now}
	// Publishing a name and version again replaces it (the same id).
	if i := slices.IndexFunc(cat.products, func(x *productState) bool { return x.info.name == p.info.name && x.info.version == p.info.version }); i >= 0 {
		p.id, p.created = cat.products[i].id, cat.products[i].created
		cat.products = slices.Delete(cat.products, i, i+1)
	}
	for _, u := range named {
		a := cat.api(u.info.name, u.info.version)
		if a == nil {
			a = &apiState{catalog: cat, id: randomID(), created: now}
			cat.apis = append(cat.apis, a)
		}
		a.info, a.doc, a.updated = u.info, u.doc, now
		p.apis = append(p.apis, a)
	}
	cat.products = append(cat.products, p)
	cat.dropUnusedAPIs()
	v := p.view(r)
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, v)
}

// resolveProductAPIs matches the product document's apis entries to the
// uploaded OpenAPI documents: an entry's $ref names a part's file name,
// its name "name:version" an API's x-ibm-name and version.
func resolveProductAPIs(p *productInfo, apis []uploadedAPI) ([]string, []uploadedAPI, *requestError) {
	keys := slices.Sorted(maps.Keys(p.apis))
	if len(keys) == 0 {
		return nil, nil, badRequest("product.apis names no API")
	}
	var named []uploadedAPI
	for _, k := range keys {
		ref, _ := p.apis[k]["$ref"].(string)
		nv, _ := p.apis[k]["name"].(string)
		i := slices.IndexFunc(apis, func(a uploadedAPI) bool {
			if ref != "" {
				return a.filename == ref || path.Base(a.filename) == path.Base(ref)
			}
			return a.info.name+":"+a.info.version == nv
		})
		if i < 0 {
			what := ref
			if what == "" {
				what = nv
			}
			return nil, nil, badRequest("product.apis.%s names %q, which no openapi part holds", k, what)
		}
		named = append(named, apis[i])
	}
	return keys, named, nil
}

func (c *catalogState) api(name, version string) *apiState {
	for _, a := range c.apis {
		if a.info.name == name && a.info.version == version {
			return a
		}
	}
	return nil
}

// dropUnusedAPIs forgets the APIs no product of the catalog names.
func (c *catalogState) dropUnusedAPIs() {
	c.apis = slices.DeleteFunc(c.apis, func(a *apiState) bool {
		return !slices.ContainsFunc(c.products, func(p *productState) bool { return slices.Contains(p.apis, a) })
	})
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	views := viewsOf(cat.products, func(p *productState) productView { return p.view(r) })
	s.mu.Unlock()
	replyList(w, r, views)
}

// getProduct answers {ref} (the product with that id, or those with
// that name) and {name}/{version}.
func (s *Server) getProduct(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	a := answerVersioned(cat.products, c, func(p *productState) any { return p.view(r) }, "product", " in catalog "+c.params["catalog"])
	s.mu.Unlock()
	a.reply(w, r, c)
}

// deleteProduct deletes the product with the id {ref} or with {name} and
// {version}, and the APIs only it named.
func (s *Server) deleteProduct(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	one, _, found := findVersioned(cat.products, c)
	if !found {
		s.mu.Unlock()
		notFound(w, r, c, "product", " in catalog "+c.params["catalog"])
		return
	}
	v := one.view(r)
	cat.products = slices.DeleteFunc(cat.products, func(p *productState) bool { return p == one })
	cat.dropUnusedAPIs()
	s.mu.Unlock()
	reply(w, r, http.StatusOK, v)
}

func (s *Server) listAPIs(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	views := viewsOf(cat.apis, func(a *apiState) apiView { return a.view(r) })
	s.mu.Unlock()
	replyList(w, r, views)
}

// getAPI answers {ref} (the API with that id, or those with that name)
// and {name}/{version}.
func (s *Server) getAPI(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	a := answerVersioned(cat.apis, c, func(a *apiState) any { return a.view(r) }, "API", " in catalog "+c.params["catalog"])
	s.mu.Unlock()
	a.reply(w, r, c)
}

// PublishUpload returns a publish upload for tests and benchmarks: a
// product document name at version that names one API, that API's
// OpenAPI document, and a wsdl part of padding bytes read from pad (none
// when padding is 0), which the simulator reads and counts but does not
// parse. The body streams: nothing of the padding is held. It returns the
// body, its exact size and its Content-Type.
func PublishUpload(name, version string, pad io.Reader, padding int64) (io.Reader, int64, string) {
	const boundary = "apicsim-publish-upload"
	part := func(field, file, ctype string) string {
		return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + field + "\"; filename=\"" + file + "\"\r\n" +
			"Content-Type: " + ctype + "\r\n\r\n"
	}
	pre := part("product", "product.yaml", "application/yaml") +
		"product: 1.0.0\ninfo:\n  name: " + name + "\n  title: " + name + "\n  version: " + version + "\n" +
		"apis:\n  " + name + "-api:\n    $ref: " + name + "-api.yaml\n" +
		"plans:\n  default-plan:\n    title: Default Plan\n\r\n" +
		part("openapi", name+"-api.yaml", "application/yaml") +
		"swagger: \"2.0\"\ninfo:\n  title: " + name + " API\n  x-ibm-name: " + name + "-api\n  version: " + version + "\n" +
		"basePath: /" + name + "\npaths: {}\n\r\n"
	if padding > 0 {
		pre += part("wsdl", name+".zip", "application/zip")
	} else {
		pad = strings.NewReader("")
	}
	post := "--" + boundary + "--\r\n"
	if padding > 0 {
		post = "\r\n" + post
	}
	body := io.MultiReader(strings.NewReader(pre), io.LimitReader(pad, padding), strings.NewReader(post))
	return body, int64(len(pre)) + padding + int64(len(post)), "multipart/form-data; boundary=" + boundary
}
