package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/store"
)

// keysData is the API keys page's data.
type keysData struct {
	Keys   []store.APIKey
	Scopes []string
	// Name and Chosen refill the form after an error.
	Name   string
	Chosen map[string]bool
	// Secret is a key just created, shown this once.
	Secret, SecretName string
}

// keysPage lists every key; only keys with every scope ("*") see it, as
// only they may manage keys offline.
func (c *Console) keysPage(rq *request) {
	c.showKeys(rq, http.StatusOK, "", keysData{})
}

func (c *Console) showKeys(rq *request, code int, msg string, d keysData) {
	keys, err := c.cfg.Keys.ListAPIKeys(rq.r.Context())
	if err != nil {
		c.errorPage(rq, http.StatusServiceUnavailable, storeUnavailable)
		return
	}
	d.Keys, d.Scopes = keys, auth.KnownScopes
	c.render(rq, code, "keys", view{Title: "API keys", Nav: "keys", Error: msg, Data: d})
}

func (c *Console) createKey(rq *request) {
	name := strings.TrimSpace(rq.r.PostFormValue("name"))
	scopes := rq.r.PostForm["scope"]
	d := keysData{Name: name, Chosen: map[string]bool{}}
	for _, s := range scopes {
		d.Chosen[s] = true
	}
	secret, err := apikey.Create(rq.r.Context(), c.cfg.Keys, c.cfg.Rand, name, scopes, c.cfg.Now())
	if err != nil {
		c.showKeys(rq, http.StatusBadRequest, err.Error(), d)
		return
	}
	c.log.Info("api key created from the console", "name", name, "scopes", scopes, "key_id", rq.key.ID)
	c.showKeys(rq, http.StatusOK, "", keysData{Secret: secret, SecretName: name})
}

func (c *Console) revokeKey(rq *request) {
	id := rq.r.PathValue("id")
	if err := c.cfg.Keys.RevokeAPIKey(rq.r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			c.errorPage(rq, http.StatusNotFound, "no api key with id "+id)
			return
		}
		c.errorPage(rq, http.StatusServiceUnavailable, storeUnavailable)
		return
	}
	c.log.Info("api key revoked from the console", "revoked_key_id", id, "key_id", rq.key.ID)
	http.Redirect(rq.w, rq.r, "/ui/keys", http.StatusSeeOther)
}
