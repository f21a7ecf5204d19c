//! Both directions of an upgraded connection (a WebSocket tunnel) copied byte for byte, holding no buffer while the
//! tunnel is quiet.
//!
//! `tokio::io::copy_bidirectional` keeps an 8 KiB buffer per direction for the tunnel's whole life, 16 KiB per
//! tunnel; most tunnels (notifications, chat) sit idle between messages, so thousands of them cost their buffers for
//! nothing. Here each read lands in a buffer on the stack of the poll that reads it and is written on at once; only
//! the part the other side does not take now (it reads slower than this side sends) moves to the heap, until it is
//! written. A tunnel waiting for its next byte holds its two directions' state and nothing else.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read takes (what `tokio::io::copy` buffers).
const CHUNK: usize = 8 * 1024;

/// Copies `a`'s bytes to `b` and `b`'s to `a` until both have ended: when one side ends its stream (a read of
/// zero bytes), the other's write side is shut down once what was read is written (a half-close, RFC 9293 §3.6),
/// and the other direction goes on. The first error either way ends both.
pub(crate) async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Flow::default(), Flow::default());
    poll_fn(|cx| {
        let forth = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (forth, back) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read and not yet taken by the writer, and how many of them it has taken; `None` whenever the writer
    /// has taken everything read, which is how a quiet tunnel holds no buffer.
    waiting: Option<(Box<[u8]>, usize)>,
    /// Bytes were written since the writer was last flushed.
    need_flush: bool,
    /// The reader has ended its stream.
    ended: bool,
    /// The writer has been shut down after the end.
    done: bool,
}

impl Flow {
    /// Moves what `reader` has to `writer` until the reader has nothing for now or the writer takes no more (then
    /// `Pending`, the task woken when either can go on), or the reader has ended and the writer is shut down.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        // One unit of the task's budget per poll, as `tokio::io::copy` spends: a tunnel whose peers always have
        // bytes ready still lets the worker's other connections run.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            if let Some((bytes, taken)) = &mut self.waiting {
                while *taken < bytes.len() {
                    let n = ready!(poll_write(cx, writer.as_mut(), &bytes[*taken..]))?;
                    coop.made_progress();
                    *taken += n;
                    self.need_flush = true;
                }
                self.waiting = None;
            }
            if self.ended {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                coop.made_progress();
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut stack);
            match reader.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => coop.made_progress(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The reader may wait for an answer to what the writer still buffers (TLS records).
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        coop.made_progress();
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
            let read = buf.filled();
            if read.is_empty() {
                self.ended = true;
                continue;
            }
            let mut taken = 0;
            while taken < read.len() {
                match poll_write(cx, writer.as_mut(), &read[taken..]) {
                    Poll::Ready(Ok(n)) => {
                        taken += n;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.waiting = Some((read[taken..].into(), 0));
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// One write of some of `bytes` (never none of them: a writer that takes zero bytes has failed).
fn poll_write<W: AsyncWrite + ?Sized>(
    cx: &mut Context<'_>,
    mut writer: Pin<&mut W>,
    bytes: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        match ready!(writer.as_mut().poll_write(cx, bytes)) {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the tunnel's other side took no bytes",
                )))
            }
            Ok(n) => return Poll::Ready(Ok(n.min(bytes.len()))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests;
