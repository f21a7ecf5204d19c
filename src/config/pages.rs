//! `[pages]`: how the gate's own pages look to the people who see them (its name, where to get help, a stylesheet).

use super::checks::{non_empty, Problems};
use super::raw::RawPages;
use super::PagesConfig;

/// The longest `pages.name` (it goes in every page's title and status line).
const MAX_NAME: usize = 64;
/// The longest `pages.help` sentence.
const MAX_HELP: usize = 500;
/// The longest `pages.help_url`.
const MAX_HELP_URL: usize = 2048;
/// The largest `pages.stylesheet_file` (it goes inline into every HTML page the gate answers with).
pub(super) const MAX_STYLESHEET: u64 = 16 * 1024;

/// Validates `[pages]`; `None` when a key of it has a problem. The stylesheet is read with the other files
/// ([`super::files`]).
pub(super) fn validate_pages(p: &mut Problems, raw: RawPages) -> Option<PagesConfig> {
    let before = p.len();
    let name = non_empty(raw.name);
    if let Some(name) = &name {
        text(p, "pages.name", name, MAX_NAME);
    }
    let help = non_empty(raw.help);
    if let Some(help) = &help {
        text(p, "pages.help", help, MAX_HELP);
    }
    let help_url = non_empty(raw.help_url);
    if let Some(url) = &help_url {
        help_link(p, url);
        if help.is_none() {
            p.add(
                "pages.help_url",
                "links the pages.help sentence, which is not set: set pages.help too (\"Ask #it-help for access.\")",
            );
        }
    }
    let stylesheet_file = raw.stylesheet_file.filter(|f| !f.as_os_str().is_empty());
    (p.len() == before).then_some(PagesConfig {
        look: crate::pages::Look {
            name,
            help,
            help_url,
            stylesheet: String::new(),
        },
        stylesheet_file,
    })
}

/// Text shown on the pages: one line of at most `max` characters, without control characters (it is escaped as
/// HTML, so any other character is safe).
fn text(p: &mut Problems, key: &str, v: &str, max: usize) {
    if v.chars().count() > max {
        p.add(
            key,
            format!("is {} characters long; at most {max} fit", v.chars().count()),
        );
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        p.add(
            key,
            format!("contains the control character {c:?}; write one line of text"),
        );
    }
}

/// `pages.help_url`: an absolute `https:`, `http:` or `mailto:` URL (a `javascript:` or `data:` link would run in
/// the gate's origin when followed).
fn help_link(p: &mut Problems, v: &str) {
    if v.len() > MAX_HELP_URL {
        p.add(
            "pages.help_url",
            format!("is {} bytes long; at most {MAX_HELP_URL} fit", v.len()),
        );
        return;
    }
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(u) if u.scheme() == "mailto" && !u.path().is_empty() => {}
        Ok(_) => p.add(
            "pages.help_url",
            format!("`{v}` must be an https://, http:// or mailto: URL"),
        ),
        Err(e) => p.add(
            "pages.help_url",
            format!("`{v}` is not an absolute URL ({e}); write it like https://wiki.example.com/access"),
        ),
    }
}

/// Checks the text of `pages.stylesheet_file`: CSS that stays inside the pages' `<style>` element.
pub(super) fn check_stylesheet(p: &mut Problems, path: &std::path::Path, css: &str) {
    // `</style` would end the element and let the file write markup into every page; CSS has no need of `<`.
    if let Some(at) = css.find('<') {
        p.add(
            "pages.stylesheet_file",
            format!(
                "{} has `<` at byte {at}; a stylesheet inside the pages' <style> element must have none",
                path.display()
            ),
        );
    }
}
