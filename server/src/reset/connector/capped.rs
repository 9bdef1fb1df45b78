//! A stream that bounds what a target may send: every connector reads through one, so a
//! hostile server cannot grow this process's memory however it frames its answers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that fails once the peer has sent more than `cap` bytes in all.
pub struct Capped<S> {
    inner: S,
    cap: u64,
    left: u64,
}

impl<S> Capped<S> {
    pub fn new(inner: S, cap: u64) -> Capped<S> {
        Capped {
            inner,
            cap,
            left: cap,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::other(format!(
                "the server sent more than {} bytes on one connection",
                self.cap
            ))));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        this.left = this.left.saturating_sub(got);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reading_past_the_cap_fails() {
        let data = [1u8; 100];
        let mut c = Capped::new(&data[..], 10);
        let mut buf = [0u8; 10];
        c.read_exact(&mut buf).await.unwrap();
        let e = c.read_exact(&mut buf[..1]).await.unwrap_err();
        assert!(e.to_string().contains("more than 10 bytes"), "{e}");
    }
}
