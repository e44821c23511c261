package apicsim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// orgState is an organisation and what it holds: catalogs and drafts.
type orgState struct {
	Org
	id            string
	created       time.Time
	catalogs      []*catalogState
	draftAPIs     []*draftState
	draftProducts []*draftState
}

// catalogState is a catalog and what is published in it.
type catalogState struct {
	org              *orgState
	id, name         string
	title, summary   string
	metadata         map[string]string
	created, updated time.Time
	products         []*productState
	apis             []*apiState
}

// newOrgState makes an org of the configuration, with a Sandbox catalog
// when it is a provider org, as API Manager makes one.
func newOrgState(o Org, now time.Time) *orgState {
	if o.OrgType == "" {
		o.OrgType = "provider"
	}
	org := &orgState{Org: o, id: randomID(), created: now}
	if o.OrgType == "provider" {
		org.catalogs = append(org.catalogs, &catalogState{org: org, id: randomID(), name: "sandbox", title: "Sandbox", created: now, updated: now})
	}
	return org
}

func (o *orgState) url(r *http.Request) string { return baseURL(r) + "/orgs/" + o.id }

func (c *catalogState) url(r *http.Request) string {
	return baseURL(r) + "/catalogs/" + c.org.id + "/" + c.id
}

// orgView is the Org schema.
type orgView struct {
	Type       string `json:"type"`
	APIVersion string `json:"api_version"`
	ID         string `json:"id"`
	Name       string `json:"name"`
	Title      string `json:"title,omitempty"`
	State      string `json:"state"`
	OrgType    string `json:"org_type"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
	URL        string `json:"url"`
}

func (o *orgState) view(r *http.Request) orgView {
	return orgView{
		Type: "org", APIVersion: apiVersion, ID: o.id, Name: o.Name, Title: o.Title, State: "enabled",
		OrgType: o.OrgType, CreatedAt: timestamp(o.created), UpdatedAt: timestamp(o.created), URL: o.url(r),
	}
}

// visibleTo reports whether the user may see the org: a Cloud Manager user
// the admin org, an API Manager user the provider orgs it owns or is a
// member of.
func (o *orgState) visibleTo(u *userState) bool {
	adminUser := strings.HasPrefix(u.Realm, "admin/")
	if o.OrgType == "admin" {
		return adminUser
	}
	return !adminUser && (o.Owner == u.Username || slices.Contains(o.Members, u.Username))
}

func (s *Server) listMyOrgs(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	var views []orgView
	for _, o := range s.orgs {
		if o.visibleTo(c.tok.user) {
			views = append(views, o.view(r))
		}
	}
	s.mu.Unlock()
	replyList(w, r, views)
}

func (s *Server) listCloudOrgs(w http.ResponseWriter, r *http.Request, _ *call) {
	s.mu.Lock()
	views := viewsOf(s.orgs, func(o *orgState) orgView { return o.view(r) })
	s.mu.Unlock()
	replyList(w, r, views)
}

// lockedOrg takes s.mu and finds the org of the request's {org} (name or
// id) that the caller may see. When there is none it answers 404, releases
// s.mu and returns nil.
func (s *Server) lockedOrg(w http.ResponseWriter, r *http.Request, c *call) *orgState {
	ref := c.params["org"]
	s.mu.Lock()
	for _, o := range s.orgs {
		if (o.Name == ref || o.id == ref) && o.visibleTo(c.tok.user) {
			return o
		}
	}
	s.mu.Unlock()
	writeError(w, r, http.StatusNotFound, fmt.Sprintf("Organization %s not found.", ref))
	return nil
}

// lockedCatalog is lockedOrg for the request's {org} and {catalog}.
func (s *Server) lockedCatalog(w http.ResponseWriter, r *http.Request, c *call) *catalogState {
	o := s.lockedOrg(w, r, c)
	if o == nil {
		return nil
	}
	if cat := o.catalog(c.params["catalog"]); cat != nil {
		return cat
	}
	s.mu.Unlock()
	writeError(w, r, http.StatusNotFound, fmt.Sprintf("Catalog %s not found in organization %s.", c.params["catalog"], c.params["org"]))
	return nil
}

func (o *orgState) catalog(ref string) *catalogState {
	for _, cat := range o.catalogs {
		if cat.name == ref || cat.id == ref {
			return cat
		}
	}
	return nil
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request, c *call) {
	o := s.lockedOrg(w, r, c)
	if o == nil {
		return
	}
	v := o.view(r)
	s.mu.Unlock()
	replyOne(w, r, http.StatusOK, v)
}

// catalogView is the Catalog schema.
type catalogView struct {
	Type        string            `json:"type"`
	APIVersion  string            `json:"api_version"`
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Title       string            `json:"title,omitempty"`
	Summary     string            `json:"summary,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	NumProducts int               `json:"num_products"`
	NumAPIs     int               `json:"num_apis"`
	OrgURL      string            `json:"org_url"`
	CreatedAt   string            `json:"created_at"`
	UpdatedAt   string            `json:"updated_at"`
	URL         string            `json:"url"`
}

func (c *catalogState) view(r *http.Request) catalogView {
	return catalogView{
		Type: "catalog", APIVersion: apiVersion, ID: c.id, Name: c.name, Title: c.title, Summary: c.summary,
		Metadata: c.metadata, NumProducts: len(c.products), NumAPIs: len(c.apis), OrgURL: c.org.url(r),
		CreatedAt: timestamp(c.created), UpdatedAt: timestamp(c.updated), URL: c.url(r),
	}
}

// catalogDoc is the Catalog schema as a request body.
type catalogDoc struct {
	Name     *string           `json:"name"`
	Title    *string           `json:"title"`
	Summary  *string           `json:"summary"`
	Metadata map[string]string `json:"metadata"`
	OwnerURL string            `json:"owner_url"`
	Gateways []string          `json:"gateways"`
	Portals  []string          `json:"portals"`
	readOnly
	// Derived, ignored.
	OrgURL                           string   `json:"org_url"`
	NumAPIs                          *int     `json:"num_apis"`
	NumProducts                      *int     `json:"num_products"`
	AppURLs                          []string `json:"app_urls"`
	ConfiguredCatalogUserRegistryURL []string `json:"configured_catalog_user_registry_urls"`
	TransferAdvisorURLs              []string `json:"transfer_advisor_urls"`
}

// checkName refuses a resource name API Connect would not take: names
// are lowercase letters, digits and dashes, as they appear in paths.
func checkName(field, name string) *requestError {
	if name == "" {
		return badRequest("missing required properties: %s", field)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return badRequest("property %s must be lowercase letters, digits, '-', '_' or '.', got %q", field, name)
		}
	}
	return nil
}

func (s *Server) listCatalogs(w http.ResponseWriter, r *http.Request, c *call) {
	o := s.lockedOrg(w, r, c)
	if o == nil {
		return
	}
	views := viewsOf(o.catalogs, func(cat *catalogState) catalogView { return cat.view(r) })
	s.mu.Unlock()
	replyList(w, r, views)
}

func (s *Server) createCatalog(w http.ResponseWriter, r *http.Request, c *call) {
	var doc catalogDoc
	e := s.readBody(r, &doc)
	if e == nil {
		e = checkName("name", deref(doc.Name))
	}
	if e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	o := s.lockedOrg(w, r, c)
	if o == nil {
		return
	}
	if o.catalog(*doc.Name) != nil {
		s.mu.Unlock()
		writeError(w, r, http.StatusConflict, fmt.Sprintf("A catalog named %s already exists in organization %s.", *doc.Name, o.Name))
		return
	}
	now := s.now()
	cat := &catalogState{org: o, id: randomID(), name: *doc.Name, title: deref(doc.Title), summary: deref(doc.Summary), metadata: doc.Metadata, created: now, updated: now}
	if cat.title == "" {
		cat.title = cat.name
	}
	o.catalogs = append(o.catalogs, cat)
	v := cat.view(r)
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, v)
}

func (s *Server) getCatalog(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	v := cat.view(r)
	s.mu.Unlock()
	replyOne(w, r, http.StatusOK, v)
}

func (s *Server) updateCatalog(w http.ResponseWriter, r *http.Request, c *call) {
	var doc catalogDoc
	e := s.readBody(r, &doc)
	if e == nil && doc.Name != nil {
		e = checkName("name", *doc.Name)
	}
	if e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	if n := deref(doc.Name); n != "" && n != cat.name {
		if cat.org.catalog(n) != nil {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A catalog named %s already exists in organization %s.", n, cat.org.Name))
			return
		}
		cat.name = n
	}
	if doc.Title != nil {
		cat.title = *doc.Title
	}
	if doc.Summary != nil {
		cat.summary = *doc.Summary
	}
	if doc.Metadata != nil {
		cat.metadata = doc.Metadata
	}
	cat.updated = s.now()
	v := cat.view(r)
	s.mu.Unlock()
	reply(w, r, http.StatusOK, v)
}

func (s *Server) deleteCatalog(w http.ResponseWriter, r *http.Request, c *call) {
	cat := s.lockedCatalog(w, r, c)
	if cat == nil {
		return
	}
	cat.org.catalogs = slices.DeleteFunc(cat.org.catalogs, func(x *catalogState) bool { return x == cat })
	v := cat.view(r)
	s.mu.Unlock()
	reply(w, r, http.StatusOK, v)
}
