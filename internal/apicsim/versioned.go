package apicsim

import (
	"fmt"
	"net/http"
)

// versioned is a resource that a path names by id, by name (all its
// versions), or by name and version: drafts, products and APIs.
type versioned interface {
	ident() (id, name, version string)
}

func (d *draftState) ident() (string, string, string) { return d.id, d.in.name, d.in.version }

func (p *productState) ident() (string, string, string) { return p.id, p.info.name, p.info.version }

func (a *apiState) ident() (string, string, string) { return a.id, a.info.name, a.info.version }

// findVersioned returns the item with the id {ref}, or the items with the
// name {ref} when no id matches, or the item with {name} and {version}.
func findVersioned[T versioned](items []T, c *call) (one T, byName []T, found bool) {
	ref, name, version := c.params["ref"], c.params["name"], c.params["version"]
	for _, it := range items {
		id, n, v := it.ident()
		switch {
		case ref != "" && id == ref, ref == "" && n == name && v == version:
			return it, nil, true
		case ref != "" && n == ref:
			byName = append(byName, it)
		}
	}
	return one, byName, false
}

// versionedAnswer is a GET's answer of a versioned resource, made under
// s.mu and written after it is released: the one item, or the list of
// those of a name, or nothing.
type versionedAnswer struct {
	one   any
	list  []any
	noun  string
	where string
}

// answerVersioned finds the request's item among items and makes its
// answer with view. Called with s.mu held.
func answerVersioned[T versioned](items []T, c *call, view func(T) any, noun, where string) versionedAnswer {
	a := versionedAnswer{noun: noun, where: where}
	one, byName, found := findVersioned(items, c)
	if found {
		a.one = view(one)
	}
	for _, it := range byName {
		a.list = append(a.list, view(it))
	}
	return a
}

// reply writes the answer: the item, the list, or a 404.
func (a versionedAnswer) reply(w http.ResponseWriter, r *http.Request, c *call) {
	switch {
	case a.one != nil:
		replyOne(w, r, http.StatusOK, a.one)
	case len(a.list) > 0:
		replyList(w, r, a.list)
	default:
		notFound(w, r, c, a.noun, a.where)
	}
}

// notFound answers 404 for the request's {ref} or {name}/{version}.
func notFound(w http.ResponseWriter, r *http.Request, c *call, noun, where string) {
	ref := c.params["ref"]
	if ref == "" {
		ref = c.params["name"] + "/" + c.params["version"]
	}
	writeError(w, r, http.StatusNotFound, fmt.Sprintf("The %s %s was not found%s.", noun, ref, where))
}
