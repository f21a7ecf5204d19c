//! An upstream response's fields as the own client read them: slices of the head it sent.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// An upstream response's end-to-end fields, as slices of the head it sent: the HTTP/1 front writes them out as they
/// are ([`crate::http1::server`]), and hyper's servers get them as a `HeaderMap` ([`crate::body::into_response_map`]), so the usual answer
/// is never copied into a map and out again. Hop-by-hop fields, fields `Connection` names and the upstream's
/// `X-Request-Id` (the gate sets its own) are already left out; every name and value was read by httparse.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    head: Bytes,
    list: Vec<Field>,
}

/// One field: its name, and where its value lies in the head (start and end).
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: HeaderName,
    pub(crate) value: (u32, u32),
}

impl Fields {
    /// No fields yet, for a head of `head` with room for `capacity`.
    pub(crate) fn with_capacity(head: Bytes, capacity: usize) -> Self {
        Fields {
            head,
            list: Vec::with_capacity(capacity),
        }
    }

    /// Adds a field whose value lies in the head.
    pub(crate) fn push(&mut self, field: Field) {
        self.list.push(field);
    }

    /// Each field's name and value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.list
            .iter()
            .map(|f| (&f.name, &self.head[f.value.0 as usize..f.value.1 as usize]))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Keeps only the fields for which `keep(name, value)` says so.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&HeaderName, &[u8]) -> bool) {
        let head = &self.head;
        self.list
            .retain(|f| keep(&f.name, &head[f.value.0 as usize..f.value.1 as usize]));
    }

    /// The values of the fields named `name`.
    pub(crate) fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// These fields, then those of `map` after them, in one map.
    pub(crate) fn into_map(self, map: HeaderMap) -> HeaderMap {
        let mut merged = HeaderMap::with_capacity(self.list.len() + map.len());
        for f in self.list {
            match HeaderValue::from_maybe_shared(self.head.slice(f.value.0 as usize..f.value.1 as usize)) {
                Ok(value) => {
                    merged.append(f.name, value);
                }
                // httparse accepts no value that `HeaderValue` refuses; were it to, the field is left out.
                Err(_) => tracing::debug!(name = %f.name, "left out an upstream field with an invalid value"),
            }
        }
        let mut last = None;
        for (name, value) in map {
            // `None`: another value of the last name.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                merged.append(name.clone(), value);
            }
        }
        merged
    }

    /// Removes every field the `Connection` values `connection` name, as [`crate::http1::hop::remove_connection_options`]
    /// does for a map (options read by the same [`crate::http1::hop::connection_options`]); returns whether `close` was
    /// among them.
    pub(crate) fn remove_connection_options(&mut self, connection: &[HeaderValue]) -> bool {
        let mut close = false;
        for option in connection.iter().flat_map(crate::http1::hop::connection_options) {
            close |= option.eq_ignore_ascii_case("close");
            self.list.retain(|f| !f.name.as_str().eq_ignore_ascii_case(option));
        }
        close
    }
}
