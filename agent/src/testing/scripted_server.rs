//! A real HTTP/1.1 server on 127.0.0.1 that answers with canned replies, in order, and
//! records every request: a stand-in for an OpenAI-compatible or Anthropic endpoint.
//!
//! It runs on its own thread and runtime, so it serves synchronous tests that spawn the
//! `agentloop` binary as well as async tests.
//!
//! ```no_run
//! use agentloop::testing::{CannedReply, ScriptedServer};
//! let server = ScriptedServer::start([
//!     CannedReply::error(429, "slow down").with_header("retry-after", "1"),
//!     CannedReply::openai_chat("DESCRIPTION: ...", 100, 20),
//! ]).unwrap();
//! let base_url = server.openai_base_url(); // http://127.0.0.1:PORT/v1
//! // ... run the client ...
//! assert_eq!(server.requests().len(), 2);
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::oneshot;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CannedReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a hung server: [`CannedReply::hang`]).
    pub delay: Duration,
    /// Replace the body with an error that quotes every request header back, as careless
    /// servers do: for checking that keys never reach error messages.
    pub echo_request_headers: bool,
}

impl CannedReply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        CannedReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
            echo_request_headers: false,
        }
    }

    /// A chat-completions reply with usage.
    pub fn openai_chat(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "model": "scripted-model",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens
                }
            }),
        )
    }

    /// A Messages API reply with usage.
    pub fn anthropic_message(content: &str, input_tokens: u64, output_tokens: u64) -> Self {
        Self::json(
            200,
            json!({
                "id": "msg_scripted",
                "type": "message",
                "role": "assistant",
                "model": "scripted-claude",
                "content": [{"type": "text", "text": content}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
            }),
        )
    }

    /// An error in the shape both OpenAI and Anthropic use: `{"error":{"message":..}}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            json!({"type": "error", "error": {"type": "scripted_error", "message": message}}),
        )
    }

    /// An error whose message quotes all request headers (API key included).
    pub fn echo_request_headers(status: u16) -> Self {
        CannedReply {
            echo_request_headers: true,
            ..Self::error(status, "")
        }
    }

    /// Never answers (well, not within any sane client timeout).
    pub fn hang() -> Self {
        Self::error(200, "too late").with_delay(Duration::from_secs(3600))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct State {
    replies: Mutex<VecDeque<CannedReply>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The running server; stops when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Binds 127.0.0.1 on a free port and serves `replies` in order. When they run out it
    /// answers 418 with a message saying so (not retried by clients, so tests fail fast).
    pub fn start(replies: impl IntoIterator<Item = CannedReply>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            replies: Mutex::new(replies.into_iter().collect()),
            requests: Mutex::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, stop) = oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-server-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, served, stop));
                // Dropping the runtime here cancels handlers still waiting (hung replies).
            })?;
        Ok(ScriptedServer {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (the Anthropic base URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1` (the OpenAI-compatible base URL).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Canned replies not yet served.
    pub fn remaining(&self) -> usize {
        self.state.replies.lock().expect("lock").len()
    }

    /// Queues another reply.
    pub fn push(&self, reply: CannedReply) {
        self.state.replies.lock().expect("lock").push_back(reply);
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let number = {
        let mut requests = state.requests.lock().expect("lock");
        requests.push(RecordedRequest {
            method,
            path,
            headers: headers.clone(),
            body,
        });
        requests.len()
    };
    let next = state.replies.lock().expect("lock").pop_front();
    let reply = next.unwrap_or_else(|| {
        CannedReply::error(
            418,
            &format!("scripted server: no canned reply left for request {number}"),
        )
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let body = if reply.echo_request_headers {
        let quoted: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        json!({"error": {"type": "authentication_error",
            "message": format!("invalid credentials; request headers were: {}", quoted.join("; "))}})
        .to_string()
    } else {
        reply.body
    };
    let mut response = Response::builder().status(reply.status);
    for (n, v) in &reply.headers {
        response = response.header(n.as_str(), v.as_str());
    }
    Ok(response
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"bad canned reply")))))
}
