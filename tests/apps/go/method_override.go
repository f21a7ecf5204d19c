// A Go app's method override as gorilla/handlers' HTTPMethodOverrideHandler writes it (standard library only): a
// POST whose form (the query, a urlencoded or a multipart body, as net/http's FormValue reads them) or
// X-HTTP-Method-Override field names PUT, PATCH or DELETE is taken as that method, in front of a handler that
// answers the method it was given as JSON.
// Built and started by tests/support/frameworks.rs: method_override PORT
package main

import (
	"encoding/json"
	"net/http"
	"os"
)

func override(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			om := r.FormValue("_method")
			if om == "" {
				om = r.Header.Get("X-HTTP-Method-Override")
			}
			if om == http.MethodPut || om == http.MethodPatch || om == http.MethodDelete {
				r.Method = om
			}
		}
		h.ServeHTTP(w, r)
	})
}

func main() {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"method": r.Method})
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], override(app)); err != nil {
		os.Exit(1)
	}
}
