//! The pages the gate answers with itself: HTML for browsers, JSON for API clients.
//!
//! Every page is `Cache-Control: no-store`, runs no script, and cannot be framed, except one made for a frame
//! ([`Page::in_frame`]), which the gate's own origin may frame.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// What the operator adds to every page (`[pages]`, [`crate::config::PagesConfig`]).
#[derive(Debug, Clone, Default)]
pub struct Look {
    /// Shown instead of "logto-gate" in every page's title and status line.
    pub name: Option<String>,
    /// A sentence on every error page (status 400 and above): whom to ask for access or help.
    pub help: Option<String>,
    /// Where `help` links to: an `https:`, `http:` or `mailto:` URL.
    pub help_url: Option<String>,
    /// CSS added after the pages' own inside their `<style>` element (no `<` in it); empty for none.
    pub stylesheet: String,
}

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
    /// The request's id (`X-Request-Id`), for a person to quote when asking for help ([`Page::with_request_id`]).
    pub request_id: Option<String>,
    /// Goes on to its link at once, the address's fragment appended ([`Page::carrying_fragment`]).
    pub carry_fragment: bool,
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
            request_id: None,
            carry_fragment: false,
        }
    }

    /// A page that goes on to its link at once, with the fragment of its own address (`#/reports/42`: browsers
    /// never send it, and a redirect carries it only as far as the next page's own navigation) form-encoded onto the
    /// link's end, whose last parameter must take it (`redirect=`). The one script the gate's pages run,
    /// `FRAGMENT_SCRIPT`, allowed by its hash alone (CSP `script-src 'sha256-...'`); without scripts, a refresh
    /// to the link as it is.
    pub fn carrying_fragment(mut self) -> Self {
        self.carry_fragment = true;
        self
    }

    /// Shows the request's id (the one in the access log line and the app's `X-Request-Id`), so that whoever helps
    /// the person can find the request in the logs.
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
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

    /// Renders as HTML when `html` is true (a browser asked), else as JSON, in the operator's `look` (`[pages]`):
    /// its name, its help sentence on an error page (status 400 and above), its stylesheet.
    pub fn render(&self, html: bool, look: &Look) -> Response<Body> {
        if html {
            self.html(look)
        } else {
            let mut value = serde_json::json!({ "error": self.code, "message": self.message });
            if let Some((href, _)) = &self.link {
                value["link"] = serde_json::Value::String(href.clone());
            }
            if let (Some(help), true) = (&look.help, self.is_error()) {
                value["help"] = serde_json::Value::String(help.clone());
                if let Some(url) = &look.help_url {
                    value["help_url"] = serde_json::Value::String(url.clone());
                }
            }
            if let Some(id) = &self.request_id {
                value["request_id"] = serde_json::Value::String(id.clone());
            }
            json_response(self.status, &value)
        }
    }

    fn is_error(&self) -> bool {
        self.status.is_client_error() || self.status.is_server_error()
    }

    fn html(&self, look: &Look) -> Response<Body> {
        let target = if self.framed { " target=\"_top\"" } else { "" };
        let link = self
            .link
            .as_ref()
            .map(|(href, text)| {
                format!(
                    "<p><a{id} href=\"{}\"{target}>{}</a></p>",
                    escape_html(href),
                    escape_html(text),
                    id = if self.carry_fragment { " id=\"continue\"" } else { "" },
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
        let help = match (&look.help, &look.help_url) {
            (Some(_), _) if !self.is_error() => String::new(),
            (Some(help), Some(url)) => format!(
                "<p class=\"help\"><a href=\"{}\"{target}>{}</a></p>",
                escape_html(url),
                escape_html(help)
            ),
            (Some(help), None) => format!("<p class=\"help\">{}</p>", escape_html(help)),
            (None, _) => String::new(),
        };
        let name = escape_html(look.name.as_deref().unwrap_or("logto-gate"));
        let title = escape_html(&self.title);
        let head_title = match &look.name {
            Some(_) => format!("{title} · {name}"),
            None => title.clone(),
        };
        let request = self
            .request_id
            .as_ref()
            .map(|id| format!(" · request <span class=\"request-id\">{}</span>", escape_html(id)))
            .unwrap_or_default();
        let (refresh, script) = match (&self.link, self.carry_fragment) {
            (Some((href, _)), true) => (
                format!(
                    "<noscript><meta http-equiv=\"refresh\" content=\"0; url={}\"></noscript>",
                    escape_html(href)
                ),
                format!("<script>{FRAGMENT_SCRIPT}</script>"),
            ),
            _ => (String::new(), String::new()),
        };
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             {refresh}<title>{head_title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36em;\
             margin:4em auto;padding:0 1em;color:#222}}h1{{font-size:1.4em}}.status{{color:#888}}{css}</style>\
             </head><body><h1>{title}</h1><p>{message}</p>{form}{link}{help}\
             <p class=\"status\">{status} · {name}{request}</p>{script}</body></html>\n",
            css = look.stylesheet,
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
        let mut csp = if self.framed { CSP_IN_FRAME } else { CSP }.to_owned();
        if self.framed {
            resp.headers_mut()
                .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        }
        // The operator's stylesheet may draw a logo or use a font written into it, and nothing from elsewhere.
        if !look.stylesheet.is_empty() {
            csp = csp.replacen("style-src", "img-src data:; font-src data:; style-src", 1);
        }
        if !script.is_empty() {
            csp = csp.replacen(
                "style-src",
                &format!("script-src '{}'; style-src", fragment_script_hash()),
                1,
            );
        }
        if let Some(f) = &self.form {
            // An origin that cannot be a field value: the page keeps `form-action 'self'` (the POST still does its
            // work; the browser then refuses the redirect onward).
            if HeaderValue::from_str(&f.then_to).is_ok() {
                csp = format!("{csp} {}", f.then_to);
            } else {
                tracing::warn!("a page cannot allow its form to go on to {:?}", f.then_to);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&csp) {
            resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
        }
        resp
    }
}

/// The script of a page [`Page::carrying_fragment`]: on to the link (`id="continue"`), with the address's fragment,
/// `#` included, form-encoded onto its end (`%23...`), or as it is when the address has none. It reads nothing but
/// its own address and the gate's link, and only ever goes to that link.
const FRAGMENT_SCRIPT: &str = "var a=document.getElementById(\"continue\"),h=location.hash;\
    location.replace(h.length>1?a.href+encodeURIComponent(h):a.href);";

/// `sha256-<base64>` of [`FRAGMENT_SCRIPT`], for CSP `script-src` (CSP Level 3 §8.4).
fn fragment_script_hash() -> &'static str {
    static HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine;
        let digest = ring::digest::digest(&ring::digest::SHA256, FRAGMENT_SCRIPT.as_bytes());
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    });
    &HASH
}

/// The gate's own pages run no script (but the one of a page [`Page::carrying_fragment`], by its hash), load
/// nothing, cannot be framed and submit forms only to the gate.
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
    fn only_a_page_carrying_the_fragment_runs_a_script_and_only_by_its_hash() {
        let page = Page::new(StatusCode::UNAUTHORIZED, "unauthorized", "t", "m").with_link("/x?a=1&redirect=%2F", "go");
        let csp = |resp: &Response<Body>| {
            resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or("")
                .to_owned()
        };
        let body = |resp: Response<Body>| {
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(resp.into_body()));
            String::from_utf8(bytes.unwrap().unwrap().to_bytes().to_vec()).unwrap()
        };
        let plain = page.clone().render(true, &Look::default());
        assert!(!csp(&plain).contains("script-src"), "{}", csp(&plain));
        assert!(!body(plain).contains("<script"));
        let look = Look {
            stylesheet: "h1{color:red}".into(),
            ..Look::default()
        };
        let carrying = page.carrying_fragment().render(true, &look);
        let policy = csp(&carrying);
        assert!(
            policy.starts_with("default-src 'none'; img-src data:; font-src data:; script-src 'sha256-")
                && policy.contains(&format!("script-src '{}'; style-src", fragment_script_hash())),
            "{policy}"
        );
        let html = body(carrying);
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(html.contains(&format!("<script>{FRAGMENT_SCRIPT}</script>")), "{html}");
        assert!(
            html.contains("<a id=\"continue\" href=\"/x?a=1&amp;redirect=%2F\">go</a>"),
            "{html}"
        );
        assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"0; url=/x?a=1&amp;redirect=%2F\">"));
    }

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
        let plain = page.render(true, &Look::default());
        assert_eq!(field(&plain, header::X_FRAME_OPTIONS), "DENY");
        assert!(field(&plain, header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"));
        let framed = page.clone().in_frame().render(true, &Look::default());
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
            .render(true, &Look::default());
        let csp = field(&with_form, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'self'") && csp.ends_with("form-action 'self' https://idp.example"));
    }

    #[test]
    fn the_operators_help_shows_on_error_pages_only_and_leaves_a_frame() {
        let look = Look {
            name: Some("Acme".to_owned()),
            help: Some("Ask <IT>".to_owned()),
            help_url: Some("https://it.example/?a=1&b=2".to_owned()),
            ..Look::default()
        };
        let text = |resp: Response<Body>| {
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(resp.into_body()));
            String::from_utf8(bytes.unwrap().unwrap().to_bytes().to_vec()).unwrap()
        };
        let denied = Page::new(StatusCode::FORBIDDEN, "forbidden", "No", "m").with_request_id("r-1");
        let html = text(denied.clone().in_frame().render(true, &look));
        assert!(
            html.contains(r#"<a href="https://it.example/?a=1&amp;b=2" target="_top">Ask &lt;IT&gt;</a>"#),
            "{html}"
        );
        assert!(
            html.contains("403 · Acme · request <span class=\"request-id\">r-1</span>"),
            "{html}"
        );
        let json: serde_json::Value = serde_json::from_str(&text(denied.render(false, &look))).unwrap();
        assert_eq!(json["help"], "Ask <IT>");
        assert_eq!(json["request_id"], "r-1");
        let fine = Page::new(StatusCode::OK, "signed_out", "Out", "m");
        assert!(!text(fine.render(true, &look)).contains("Ask"));
        let json: serde_json::Value = serde_json::from_str(&text(fine.render(false, &look))).unwrap();
        assert!(json.get("help").is_none() && json.get("request_id").is_none(), "{json}");
        // A stylesheet may draw with what it carries inline, and nothing else.
        let styled = Look {
            stylesheet: "h1{}".to_owned(),
            ..look
        };
        let csp = Page::new(StatusCode::FORBIDDEN, "forbidden", "No", "m").render(true, &styled);
        let csp = csp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            csp,
            "default-src 'none'; img-src data:; font-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; \
             form-action 'self'"
        );
        // Without [pages] a page looks as it always did.
        let plain = text(Page::new(StatusCode::FORBIDDEN, "forbidden", "No", "m").render(true, &Look::default()));
        assert!(
            plain.contains("<title>No</title>") && plain.contains("403 · logto-gate</p>"),
            "{plain}"
        );
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
