//! Reading the rest of a refused body, so the client hears the refusal.
//!
//! A body over the limit is refused (413) as soon as the limit is crossed, while the client is
//! still sending. Over HTTP/2 the server then resets the stream, and some clients (Debian's
//! curl among them) report the reset ("Stream error in the HTTP/2 framing layer") instead of
//! the 413 they were sent. So the request body is shared between the handler and this
//! middleware: when the answer is 413, the middleware reads and discards what the client still
//! sends, up to [`DRAIN_BYTES`] more and for at most [`DRAIN_TIME`], before the answer goes out.
//! A client that sends more, or slower, gets the reset as before.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// At most this much of a refused body is read and discarded.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A body that reads through `shared`, so that whatever the handler leaves unread stays
/// there for the middleware. Trailers are not passed on (no endpoint reads them).
fn reading_through(shared: Arc<Mutex<Body>>) -> Body {
    Body::from_stream(futures_util::stream::poll_fn(
        move |cx: &mut Context<'_>| {
            let mut body = shared.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                return match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Poll::Ready(Some(Ok::<Bytes, axum::Error>(data))),
                        Err(_trailers) => continue,
                    },
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                };
            }
        },
    ))
}

/// Runs the request; a 413 waits until the rest of the body has arrived (within bounds).
pub async fn drain_refused_bodies(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Mutex::new(body));
    let req = Request::from_parts(parts, reading_through(shared.clone()));
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let rest = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout(DRAIN_TIME, discard(rest)).await;
    }
    response
}

/// Reads and drops up to [`DRAIN_BYTES`] of `body`.
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len() as u64;
        if read > DRAIN_BYTES {
            return;
        }
    }
}
