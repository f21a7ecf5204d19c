//! `[assertion]`: the signed identity assertion sent to the app.

use super::checks::{duration, non_empty, Problems};
use super::raw::RawAssertion;
use super::AssertionConfig;

/// Validates `[assertion]`: `Ok(None)` when it is off, `Err(())` when a key of it has a problem.
pub(super) fn validate_assertion(p: &mut Problems, raw: RawAssertion) -> Result<Option<AssertionConfig>, ()> {
    let before = p.len();
    let assertion = if raw.enabled.unwrap_or(false) {
        let audience = p.required("assertion.audience", non_empty(raw.audience));
        let lifetime = duration(p, "assertion.lifetime", raw.lifetime, "60s");
        // Whether the key file can be read is checked with the other files, after validation (`super::files`).
        audience.map(|audience| AssertionConfig {
            audience,
            signing_key_file: raw.signing_key_file.clone(),
            lifetime,
        })
    } else {
        None
    };

    if p.len() > before {
        return Err(());
    }
    Ok(assertion)
}
