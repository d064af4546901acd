package metrics

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// StatusHandlers returns /status and /healthz for Serve's extra handlers:
// /status is status() as JSON (what `status --json` prints), /healthz
// answers 200 "ok" when problems finds none in it, else 503 with one
// problem per line (the rules of `status --check`). problems reads its
// options from the query (?max_lag=10s); an error in them is a 400.
func StatusHandlers[S any](status func() S, problems func(st S, q url.Values) ([]string, error)) map[string]http.Handler {
	return map[string]http.Handler{
		"/status": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			json.NewEncoder(w).Encode(status())
		}),
		"/healthz": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			ps, err := problems(status(), r.URL.Query())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if len(ps) == 0 {
				fmt.Fprintln(w, "ok")
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(ps, "\n"))
		}),
	}
}
