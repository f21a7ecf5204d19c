//! What the gate reads of an HTTP/2 client's bytes itself: where each frame begins and ends (RFC 9113 §4.1), and
//! whether a header block is still arriving. hyper's server (the h2 crate) reads the frames; this only watches them
//! go by, so that the connection's sweeper ([`crate::connections`]) can bound how long one takes to arrive, as
//! `server.header_read_timeout` bounds an HTTP/1 request head. h2 bounds a header block's size and the number of
//! its frames, not its time: without this, a client sending one a byte at a time would hold its connection for as
//! long as it likes, however short the timeouts. nginx bounds a partly received HTTP/2 frame by its
//! `client_header_timeout` in the same way.
//!
//! A header block is a HEADERS (or PUSH_PROMISE) frame and the CONTINUATION frames up to the one that carries
//! END_HEADERS (RFC 9113 §4.3); what is watched is a header block, or any frame but DATA, or the connection preface,
//! from its first byte to its last. A request body (DATA) that stops coming is the idle timeout's
//! ([`crate::body::paced`]).

use std::sync::Arc;

use crate::activity::Activity;
use crate::observed::Observer;
use crate::sniff::PREFACE;

/// The length of the client connection preface (RFC 9113 §3.4), which comes before the first frame.
const PREFACE_LEN: usize = PREFACE.len();
/// A frame header's length (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows the frames a client sends, from the connection preface on, and tells its [`Activity`] which header block
/// is arriving ([`Activity::set_arriving`]) whenever that changes.
pub struct Arrivals {
    activity: Arc<Activity>,
    /// Bytes of the connection preface still to come.
    preface_left: usize,
    /// The frame header being read, and how much of it has come.
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Bytes of the current frame's payload still to come, and whether it is a DATA frame.
    payload_left: usize,
    data: bool,
    /// A HEADERS or PUSH_PROMISE frame without END_HEADERS has come, and the CONTINUATION that ends its block has not.
    block_open: bool,
    /// How many times something began arriving; the current one while `arriving`.
    started: u64,
    arriving: bool,
}

impl Arrivals {
    /// Watches a connection whose first byte (the connection preface's) has not been read yet.
    pub fn new(activity: Arc<Activity>) -> Self {
        Arrivals {
            activity,
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            payload_left: 0,
            data: false,
            block_open: false,
            started: 0,
            arriving: false,
        }
    }

    /// Reads `bytes` as the next of the stream: skips payloads, reads frame headers.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                &mut self.preface_left
            } else if self.payload_left > 0 {
                &mut self.payload_left
            } else {
                let n = (FRAME_HEADER_LEN - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == FRAME_HEADER_LEN {
                    self.have = 0;
                    self.frame_begins();
                }
                continue;
            };
            let n = (*skip).min(bytes.len());
            *skip -= n;
            bytes = &bytes[n..];
        }
    }

    /// A whole frame header has been read.
    fn frame_begins(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        self.data = kind == DATA;
        match kind {
            HEADERS | PUSH_PROMISE => self.block_open = flags & END_HEADERS == 0,
            CONTINUATION if flags & END_HEADERS != 0 => self.block_open = false,
            _ => {}
        }
    }

    /// Whether the connection preface, a header block or a frame other than DATA is partly here.
    fn partly_here(&self) -> bool {
        if self.preface_left > 0 {
            return self.preface_left < PREFACE_LEN;
        }
        self.have > 0 || self.block_open || (self.payload_left > 0 && !self.data)
    }
}

impl Observer for Arrivals {
    fn read(&mut self, bytes: &[u8]) {
        self.follow(bytes);
        let arriving = self.partly_here();
        if arriving != self.arriving {
            self.arriving = arriving;
            if arriving {
                self.started += 1;
                self.activity.set_arriving(Some(self.started));
            } else {
                self.activity.set_arriving(None);
            }
        }
    }
}

/// Whether something is still arriving after `reads`, read in turn from a connection's start (for the fuzz
/// targets: however the same bytes are split into reads, the answer must be the same).
pub fn arriving_after<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let activity = Arc::new(Activity::new());
    let mut arrivals = Arrivals::new(Arc::clone(&activity));
    for read in reads.into_iter().filter(|read| !read.is_empty()) {
        arrivals.read(read);
    }
    arrivals.arriving
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len().to_be_bytes();
        let mut f = vec![len[5], len[6], len[7], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `pieces` one read each; returns, after each read, what the activity says is arriving.
    fn after_each(pieces: &[&[u8]]) -> Vec<u64> {
        let activity = Arc::new(Activity::new());
        let mut arrivals = Arrivals::new(Arc::clone(&activity));
        pieces
            .iter()
            .map(|piece| {
                arrivals.read(piece);
                activity.arriving() & 1
            })
            .collect()
    }

    #[test]
    fn whole_frames_leave_nothing_arriving() {
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let headers = frame(HEADERS, END_HEADERS | 0x1, 1, &[0x82, 0x86, 0x84]);
        let data = frame(DATA, 0x1, 3, b"body");
        let all = [&PREFACE[..], &settings, &headers, &data].concat();
        assert_eq!(after_each(&[&all]), [0]);
        assert_eq!(after_each(&[PREFACE, &settings, &headers, &data]), [0, 0, 0, 0]);
    }

    #[test]
    fn a_header_block_arrives_until_its_end_headers_frame_is_whole() {
        let headers = frame(HEADERS, 0x1, 1, &[0x82, 0x86]);
        let middle = frame(CONTINUATION, 0, 1, &[0x84]);
        let last = frame(CONTINUATION, END_HEADERS, 1, &[0x40, 1, b'a', 1, b'b']);
        let (last_head, last_tail) = last.split_at(11);
        assert_eq!(
            after_each(&[PREFACE, &headers, &middle, last_head, last_tail]),
            [0, 1, 1, 1, 0]
        );
    }

    #[test]
    fn a_frame_split_anywhere_arrives_until_whole_except_data() {
        let headers = frame(HEADERS, END_HEADERS, 1, &[0x82, 0x86, 0x84, 0x41, 1, b'h']);
        for cut in 1..headers.len() {
            let (a, b) = headers.split_at(cut);
            assert_eq!(after_each(&[PREFACE, a, b]), [0, 1, 0], "cut at {cut}");
        }
        let data = frame(DATA, 0, 1, b"a body in two pieces");
        for cut in 1..data.len() {
            let (a, b) = data.split_at(cut);
            let expected = if cut < FRAME_HEADER_LEN { [0, 1, 0] } else { [0, 0, 0] };
            assert_eq!(after_each(&[PREFACE, a, b]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn the_preface_is_not_a_frame_but_arrives_like_one() {
        let (a, b) = PREFACE.split_at(10);
        assert_eq!(after_each(&[a, b]), [1, 0]);
        assert_eq!(after_each(&[PREFACE]), [0]);
    }

    /// Whatever the frames and wherever reads split them, the state after the last byte is the same.
    #[test]
    fn any_split_of_any_frames_ends_the_same() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for _ in 0..200 {
            let mut stream = PREFACE.to_vec();
            for _ in 0..next(12) {
                let kind = [DATA, HEADERS, PUSH_PROMISE, CONTINUATION, 0x4, 0x6, 0x8, 0xF][next(8) as usize];
                let payload = vec![0xAB; next(40) as usize];
                stream.extend(frame(kind, next(256) as u8, 1, &payload));
            }
            // Sometimes end in the middle of a frame.
            stream.truncate(stream.len() - next(6) as usize);
            let whole = Arc::new(Activity::new());
            let mut reference = Arrivals::new(Arc::clone(&whole));
            reference.read(&stream);
            let pieces = Arc::new(Activity::new());
            let mut split = Arrivals::new(Arc::clone(&pieces));
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = (1 + next(20) as usize).min(rest.len());
                split.read(&rest[..n]);
                rest = &rest[n..];
            }
            let state = |a: &Arrivals| (a.have, a.header, a.payload_left, a.data, a.block_open, a.partly_here());
            assert_eq!(state(&reference), state(&split), "{stream:?}");
            assert_eq!(whole.arriving() & 1, pieces.arriving() & 1);
        }
    }

    #[test]
    fn each_block_is_told_apart() {
        let activity = Arc::new(Activity::new());
        let mut arrivals = Arrivals::new(Arc::clone(&activity));
        let mut check = crate::activity::ArrivalCheck::default();
        arrivals.read(PREFACE);
        arrivals.read(&frame(HEADERS, 0, 1, &[0x82])[..5]);
        assert!(!check.is_overdue(&activity, std::time::Duration::ZERO), "first seen");
        assert!(
            check.is_overdue(&activity, std::time::Duration::ZERO),
            "the same block, still arriving"
        );
        arrivals.read(&frame(HEADERS, 0, 1, &[0x82])[5..]);
        arrivals.read(&frame(CONTINUATION, END_HEADERS, 1, &[0x84]));
        arrivals.read(&frame(HEADERS, 0, 3, &[0x82]));
        assert!(
            !check.is_overdue(&activity, std::time::Duration::ZERO),
            "another block is not the same one"
        );
    }
}
