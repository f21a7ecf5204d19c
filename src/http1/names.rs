//! Field names read once per connection: a peer usually sends every message on a connection with the same fields
//! in the same order (an upstream its responses, a client its requests), so a name is mostly found by comparing
//! its bytes with those at the same position of the connection's last head, instead of `HeaderName::from_bytes`
//! lowercasing it and looking it up (and allocating, for a name that is not a standard one). Only identical bytes
//! are reused; anything else is read afresh, and an invalid name is refused and not kept.
//!
//! Also where httparse found each field ([`spans`]), so that its borrow of a read buffer can end before the buffer
//! is split and the fields become slices of the split-off head.

use http::header::HeaderName;

/// Where a header field's name and value lie in a head: name start and end, value start and end.
pub type Span = (usize, usize, usize, usize);

/// Where `part` (a slice httparse returned) starts in `head` (the buffer it parsed).
pub fn offset(head: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - head.as_ptr() as usize
}

/// The spans of the `fields` httparse read from `head`.
pub fn spans<'a>(head: &'a [u8], fields: &'a [httparse::Header<'_>]) -> impl Iterator<Item = Span> + 'a {
    fields.iter().map(move |field| {
        let (name, value) = (offset(head, field.name.as_bytes()), offset(head, field.value));
        (name, name + field.name.len(), value, value + field.value.len())
    })
}

/// The field names of a connection's last message head, by position, as sent and as `HeaderName`s.
#[derive(Default)]
pub struct Names(Vec<(NameBytes, HeaderName)>);

/// A field name as sent, and its length.
type NameBytes = ([u8; Names::LONGEST], u8);

impl Names {
    /// Keeps names for this many positions.
    const POSITIONS: usize = 32;
    /// Keeps names at most this long.
    const LONGEST: usize = 32;

    /// The name of the field at `position` of a head, sent as `bytes`.
    pub fn get(&mut self, position: usize, bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
        if let Some(((kept, len), name)) = self.0.get(position) {
            if kept.get(..usize::from(*len)) == Some(bytes) {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(bytes)?;
        if bytes.len() <= Self::LONGEST && position < Self::POSITIONS && position <= self.0.len() {
            let mut kept = [0u8; Self::LONGEST];
            kept[..bytes.len()].copy_from_slice(bytes);
            // At most LONGEST (32), so it fits.
            let entry = ((kept, bytes.len() as u8), name.clone());
            match self.0.get_mut(position) {
                Some(slot) => *slot = entry,
                None => self.0.push(entry),
            }
        }
        Ok(name)
    }
}

/// What a connection keeps from one head to the next, so that reading a head allocates and clears nothing: the
/// span list, and the names of the last head.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) spans: Vec<Span>,
    pub(crate) names: Names,
}
