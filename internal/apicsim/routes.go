package apicsim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// A route is one operation of the platform API: its method, its path
// under /api with {parameters}, and the scope its security block names in
// IBM's Provider API document ("" with public false: any valid token).
type route struct {
	method  string
	pattern string
	scope   string
	public  bool // no token needed
	admin   bool // Cloud Manager users only (realm admin/...)
	serve   func(http.ResponseWriter, *http.Request, *call)
}

// call is a matched request: its path parameters and, unless the route is
// public, the caller's token.
type call struct {
	tok    *accessToken
	params map[string]string
}

// routes lists the operations the simulator serves, in the order they are
// matched. Scopes are the document's (cloud ones, which the document's
// paths omit, from its scope descriptions).
func (s *Server) routes() []route {
	return []route{
		{method: "GET", pattern: "/cloud/admin/identity-providers", public: true, serve: s.listIdentityProviders("admin")},
		{method: "GET", pattern: "/cloud/provider/identity-providers", public: true, serve: s.listIdentityProviders("provider")},

		{method: "GET", pattern: "/me", scope: "my:view", serve: s.getMe},
		{method: "PUT", pattern: "/me", scope: "my:manage", serve: s.updateMe},
		{method: "POST", pattern: "/me/sign-out", scope: "my:manage", serve: s.signOut},
		{method: "GET", pattern: "/orgs", scope: "my:view", serve: s.listMyOrgs},

		{method: "GET", pattern: "/orgs/{org}", scope: "org:view", serve: s.getOrg},
		{method: "GET", pattern: "/orgs/{org}/catalogs", scope: "child:view", serve: s.listCatalogs},
		{method: "POST", pattern: "/orgs/{org}/catalogs", scope: "child:create", serve: s.createCatalog},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}", scope: "child:view", serve: s.getCatalog},
		{method: "PATCH", pattern: "/catalogs/{org}/{catalog}", scope: "child:manage", serve: s.updateCatalog},
		{method: "DELETE", pattern: "/catalogs/{org}/{catalog}", scope: "child:manage", serve: s.deleteCatalog},

		{method: "POST", pattern: "/orgs/{org}/drafts/draft-apis", scope: "api-drafts:edit", serve: s.createDraft(draftAPIs)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-apis", scope: "api-drafts:view", serve: s.listDrafts(draftAPIs)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-apis/{ref}", scope: "api-drafts:view", serve: s.getDraft(draftAPIs)},
		{method: "PATCH", pattern: "/orgs/{org}/drafts/draft-apis/{ref}", scope: "api-drafts:edit", serve: s.updateDraft(draftAPIs)},
		{method: "DELETE", pattern: "/orgs/{org}/drafts/draft-apis/{ref}", scope: "api-drafts:edit", serve: s.deleteDraft(draftAPIs)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-apis/{name}/{version}", scope: "api-drafts:view", serve: s.getDraft(draftAPIs)},
		{method: "PATCH", pattern: "/orgs/{org}/drafts/draft-apis/{name}/{version}", scope: "api-drafts:edit", serve: s.updateDraft(draftAPIs)},
		{method: "DELETE", pattern: "/orgs/{org}/drafts/draft-apis/{name}/{version}", scope: "api-drafts:edit", serve: s.deleteDraft(draftAPIs)},

		{method: "POST", pattern: "/orgs/{org}/drafts/draft-products", scope: "product-drafts:edit", serve: s.createDraft(draftProducts)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-products", scope: "product-drafts:view", serve: s.listDrafts(draftProducts)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-products/{ref}", scope: "product-drafts:view", serve: s.getDraft(draftProducts)},
		{method: "PATCH", pattern: "/orgs/{org}/drafts/draft-products/{ref}", scope: "product-drafts:edit", serve: s.updateDraft(draftProducts)},
		{method: "DELETE", pattern: "/orgs/{org}/drafts/draft-products/{ref}", scope: "product-drafts:edit", serve: s.deleteDraft(draftProducts)},
		{method: "GET", pattern: "/orgs/{org}/drafts/draft-products/{name}/{version}", scope: "product-drafts:view", serve: s.getDraft(draftProducts)},
		{method: "PATCH", pattern: "/orgs/{org}/drafts/draft-products/{name}/{version}", scope: "product-drafts:edit", serve: s.updateDraft(draftProducts)},
		{method: "DELETE", pattern: "/orgs/{org}/drafts/draft-products/{name}/{version}", scope: "product-drafts:edit", serve: s.deleteDraft(draftProducts)},

		{method: "POST", pattern: "/catalogs/{org}/{catalog}/publish", scope: "product:manage", serve: s.publish},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/products", scope: "product:view", serve: s.listProducts},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/products/{ref}", scope: "product:view", serve: s.getProduct},
		{method: "DELETE", pattern: "/catalogs/{org}/{catalog}/products/{ref}", scope: "product:manage", serve: s.deleteProduct},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/products/{name}/{version}", scope: "product:view", serve: s.getProduct},
		{method: "DELETE", pattern: "/catalogs/{org}/{catalog}/products/{name}/{version}", scope: "product:manage", serve: s.deleteProduct},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/apis", scope: "product:view", serve: s.listAPIs},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/apis/{ref}", scope: "product:view", serve: s.getAPI},
		{method: "GET", pattern: "/catalogs/{org}/{catalog}/apis/{name}/{version}", scope: "product:view", serve: s.getAPI},

		{method: "POST", pattern: "/cloud/api-keys", scope: "my:manage", serve: s.createAPIKey},
		{method: "GET", pattern: "/cloud/api-keys", scope: "my:view", serve: s.listAPIKeys},
		{method: "GET", pattern: "/cloud/api-keys/{key}", scope: "my:view", serve: s.getAPIKey},
		{method: "DELETE", pattern: "/cloud/api-keys/{key}", scope: "my:manage", serve: s.deleteAPIKey},

		{method: "GET", pattern: "/cloud/settings/toolkit-credentials", serve: s.toolkitCredentials},
		{method: "GET", pattern: "/cloud/orgs", scope: "cloud:view", admin: true, serve: s.listCloudOrgs},
		{method: "POST", pattern: "/cloud/registrations", scope: "cloud:manage", admin: true, serve: s.createRegistration},
		{method: "GET", pattern: "/cloud/registrations", scope: "cloud:view", admin: true, serve: s.listRegistrations},
		{method: "GET", pattern: "/cloud/registrations/{registration}", scope: "cloud:view", admin: true, serve: s.getRegistration},
		{method: "PATCH", pattern: "/cloud/registrations/{registration}", scope: "cloud:manage", admin: true, serve: s.updateRegistration},
		{method: "DELETE", pattern: "/cloud/registrations/{registration}", scope: "cloud:manage", admin: true, serve: s.deleteRegistration},
	}
}

// match returns the path parameters when path, split into segments, has
// the pattern's shape.
func match(pattern string, segs []string) (map[string]string, bool) {
	pp := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	if len(pp) != len(segs) {
		return nil, false
	}
	var params map[string]string
	for i, p := range pp {
		if name, ok := strings.CutPrefix(p, "{"); ok {
			if segs[i] == "" {
				return nil, false
			}
			if params == nil {
				params = make(map[string]string)
			}
			params[strings.TrimSuffix(name, "}")] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// serveAPI answers every /api call but /api/token: 404 for a path no
// operation has, 405 (with Allow) for a method it lacks, then the token,
// the realm and the scope, and the operation.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("%s %s is not a valid API path.", r.Method, r.URL.Path))
		return
	}
	segs := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	var allow []string
	for i := range s.table {
		rt := &s.table[i]
		params, ok := match(rt.pattern, segs)
		if !ok {
			continue
		}
		if rt.method != r.Method {
			if !slices.Contains(allow, rt.method) {
				allow = append(allow, rt.method)
			}
			continue
		}
		c := &call{params: params}
		if !rt.public {
			if c.tok, ok = s.authenticate(w, r); !ok {
				return
			}
			if rt.admin && !strings.HasPrefix(c.tok.user.Realm, "admin/") {
				writeError(w, r, http.StatusForbidden, "This operation needs a Cloud Manager user (realm admin/...).")
				return
			}
			if rt.scope != "" && !slices.Contains(c.tok.scopes, rt.scope) {
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("The token lacks the scope %s, which %s %s requires.", rt.scope, r.Method, r.URL.Path))
				return
			}
		}
		rt.serve(w, r, c)
		return
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	writeError(w, r, http.StatusNotFound, fmt.Sprintf("%s %s is not a valid API path.", r.Method, r.URL.Path))
}
