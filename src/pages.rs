//! The pages the gate answers with itself: HTML for browsers, JSON for API clients.
//!
//! Every page is `Cache-Control: no-store`, runs no script, and cannot be framed, except one made for a frame
//! ([`Page::in_frame`]), which the gate's own origin may frame.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A page to show: status, short title, a sentence for the person, an optional link and an optional button.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    /// Machine-readable error code for JSON clients, e.g. `unauthorized`.
    pub code: &'static str,
    pub title: String,
    pub message: String,
    pub link: Option<(String, String)>,
    /// A button that POSTs to a path of the gate's own, and the origin the answer to that POST redirects to: CSP
    /// `form-action` governs the redirects after a form's submission too (CSP Level 3 §6.4.1), so the page allows
    /// it besides `'self'`.
    pub form: Option<Form>,
    /// Shown inside a frame of the gate's own origin ([`Page::in_frame`]).
    pub framed: bool,
}

/// A [`Page`]'s button (see [`Page::with_form`]).
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub button: String,
    pub then_to: String,
}

impl Page {
    pub fn new(status: StatusCode, code: &'static str, title: &str, message: impl Into<String>) -> Self {
        Page {
            status,
            code,
            title: title.to_owned(),
            message: message.into(),
            link: None,
            form: None,
            framed: false,
        }
    }

    /// A page for a frame: pages of the gate's own origin may frame it (CSP `frame-ancestors 'self'`,
    /// `X-Frame-Options: SAMEORIGIN`), and its link opens in the whole window (`target="_top"`, HTML §7.3.1.7), as
    /// a sign-in must: Logto's pages refuse to be framed by other origins.
    pub fn in_frame(mut self) -> Self {
        self.framed = true;
        self
    }

    /// A button (`id="confirm"`) that POSTs to `action`, whose answer may redirect to the origin `then_to`.
    pub fn with_form(mut self, action: &str, button: &str, then_to: &str) -> Self {
        self.form = Some(Form {
            action: action.to_owned(),
            button: button.to_owned(),
            then_to: then_to.to_owned(),
        });
        self
    }

    pub fn with_link(mut self, href: impl Into<String>, text: impl Into<String>) -> Self {
        self.link = Some((href.into(), text.into()));
        self
    }

    /// Renders as HTML when `html` is true (a browser asked), else as JSON.
    pub fn render(&self, html: bool) -> Response<Body> {
        if html {
            self.html()
        } else {
            let mut value = serde_json::json!({ "error": self.code, "message": self.message });
            if let Some((href, _)) = &self.link {
                value["link"] = serde_json::Value::String(href.clone());
            }
            json_response(self.status, &value)
        }
    }

    fn html(&self) -> Response<Body> {
        let link = self
            .link
            .as_ref()
            .map(|(href, text)| {
                let target = if self.framed { " target=\"_top\"" } else { "" };
                format!(
                    "<p><a href=\"{}\"{target}>{}</a></p>",
                    escape_html(href),
                    escape_html(text)
                )
            })
            .unwrap_or_default();
        let form = self
            .form
            .as_ref()
            .map(|f| {
                format!(
                    "<form method=\"post\" action=\"{}\"><button id=\"confirm\" type=\"submit\">{}</button></form>",
                    escape_html(&f.action),
                    escape_html(&f.button)
                )
            })
            .unwrap_or_default();
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36em;\
             margin:4em auto;padding:0 1em;color:#222}}h1{{font-size:1.4em}}.status{{color:#888}}</style>\
             </head><body><h1>{title}</h1><p>{message}</p>{form}{link}\
             <p class=\"status\">{status} · logto-gate</p></body></html>\n",
            title = escape_html(&self.title),
            message = escape_html(&self.message),
            status = self.status.as_u16(),
        );
        let mut resp = Response::new(body::full(page));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        harden(&mut resp);
        if self.framed {
            let h = resp.headers_mut();
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP_IN_FRAME));
        }
        if let Some(f) = &self.form {
            let base = if self.framed { CSP_IN_FRAME } else { CSP };
            match HeaderValue::from_str(&format!("{base} {}", f.then_to)) {
                Ok(v) => {
                    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
                }
                // An origin that cannot be a field value: the page keeps `form-action 'self'` (the POST still does
                // its work; the browser then refuses the redirect onward).
                Err(_) => tracing::warn!("a page cannot allow its form to go on to {:?}", f.then_to),
            }
        }
        resp
    }
}

/// The gate's own pages run no script, load nothing, cannot be framed and submit forms only to the gate.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'";
/// [`CSP`] for a page made for a frame ([`Page::in_frame`]). Both end in `form-action`, which a form extends.
const CSP_IN_FRAME: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; form-action 'self'";

/// A JSON response with the gate's hardening headers.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    harden(&mut resp);
    resp
}

/// A redirect (302 Found, or 303 See Other after a POST) the browser must not cache.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            // Locations are built from validated parts; refuse rather than emit a broken header.
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    harden(&mut resp);
    resp
}

/// A redirect with a small HTML body: a link to `continue_to` and a meta refresh to it, for a proxy that shows the
/// body of an answer it fetched itself (the browser never followed the `Location`).
pub fn redirect_with_page(status: StatusCode, location: &str, continue_to: &str) -> Response<Body> {
    let mut resp = redirect(status, location);
    if resp.status() != status {
        return resp;
    }
    let href = escape_html(continue_to);
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0; url={href}\"><title>Signing in</title></head>\
         <body><p><a href=\"{href}\">Continue to sign in</a></p></body></html>\n"
    );
    *resp.body_mut() = body::full(page);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Marks an answer the gate made itself ([`harden`]): the operator's `[response_headers]` fill in what it lacks but
/// never replace or remove its own fields (its pages' `Content-Security-Policy` is stricter than an app's).
#[derive(Debug, Clone, Copy)]
pub struct OwnAnswer;

/// Headers on every response the gate itself produces.
pub fn harden(resp: &mut Response<Body>) {
    resp.extensions_mut().insert(OwnAnswer);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_page_made_for_a_frame_may_be_framed_and_its_link_leaves_the_frame() {
        let page = Page::new(StatusCode::UNAUTHORIZED, "unauthorized", "t", "m").with_link("/x?a=1&b=2", "go");
        let field = |resp: &Response<Body>, name: header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let plain = page.render(true);
        assert_eq!(field(&plain, header::X_FRAME_OPTIONS), "DENY");
        assert!(field(&plain, header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"));
        let framed = page.clone().in_frame().render(true);
        assert_eq!(field(&framed, header::X_FRAME_OPTIONS), "SAMEORIGIN");
        let csp = field(&framed, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("frame-ancestors 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        let body = |resp: Response<Body>| {
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(resp.into_body()));
            String::from_utf8(bytes.unwrap().unwrap().to_bytes().to_vec()).unwrap()
        };
        assert!(body(framed).contains(r#"<a href="/x?a=1&amp;b=2" target="_top">go</a>"#));
        assert!(!body(plain).contains("target="));
        // A form extends the frame's policy, not the unframed one.
        let with_form = page
            .in_frame()
            .with_form("/_logto/x", "b", "https://idp.example")
            .render(true);
        let csp = field(&with_form, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'self'") && csp.ends_with("form-action 'self' https://idp.example"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn redirect_with_a_header_breaking_location_is_refused() {
        let r = redirect(StatusCode::FOUND, "/a\r\nSet-Cookie: x=1");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::LOCATION).is_none());
    }
}
