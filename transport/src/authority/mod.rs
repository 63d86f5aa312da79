//! Accept any HTTP/2 `:authority` on unix and vsock connections.
//!
//! Standard gRPC clients do not agree on what a unix socket's authority is: grpc-go and
//! tonic send `localhost`, grpc-core (Python, C++, Ruby, C#, PHP) the percent-encoded socket
//! path, grpc-java the path itself. The HTTP/2 stack under tonic rejects the last two with
//! `RST_STREAM(PROTOCOL_ERROR)` before the request reaches the service, so a host written in
//! those languages could not call the agent without knowing a channel option. On unix and
//! vsock the authority carries nothing (there is one server behind the socket and no
//! virtual hosting), so [`RelaxedAuthority`] replaces an invalid one with `localhost` on the
//! way in. TCP, and TLS over TCP in particular, keeps h2's strict checking.

mod hpack;
mod rewriter;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use rewriter::{AuthorityRewriter, RewriteError, MAX_HEADER_BLOCK, PREFACE, REPLACEMENT};

/// A server-side byte stream whose incoming HTTP/2 header blocks get a valid `:authority`
/// (see the [module docs](self)). Writes pass straight through; so do reads of a connection
/// that does not open with the HTTP/2 preface.
#[derive(Debug)]
pub struct RelaxedAuthority<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    /// How much of the rewriter's output the reader already took.
    taken: usize,
}

impl<S> RelaxedAuthority<S> {
    /// Wraps a freshly accepted stream (before any byte of it was read).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: AuthorityRewriter::new(),
            taken: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many requests had their `:authority` replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewriter.rewritten()
    }

    /// Copies pending output into `buf`; true if anything was copied.
    fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let out = self.rewriter.output();
        let n = (out.len() - self.taken).min(buf.remaining());
        if n == 0 {
            return false;
        }
        buf.put_slice(&out[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == out.len() {
            out.clear();
            self.taken = 0;
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RelaxedAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.drain_into(buf) || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                // Nothing left to inspect on this connection: read straight through.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Read into the caller's buffer, hand the bytes to the rewriter, then give the
            // space back: what the caller gets is the rewriter's output.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() == before {
                return Poll::Ready(Ok(())); // end of stream
            }
            let fed = this.rewriter.feed(&buf.filled()[before..]);
            buf.set_filled(before);
            fed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RelaxedAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
