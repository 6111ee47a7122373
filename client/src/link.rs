//! One transport link of the remote client: a WebSocket (tokio-tungstenite), or the stdio of
//! an `exec-server serve --listen stdio` child. Frames in, JSON text out; nothing else.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Error;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message received.
pub(crate) enum Incoming {
    /// A JSON-RPC message (a text frame, a binary frame that is not an output frame, or a line).
    Json(Bytes),
    /// A binary WebSocket frame (SPEC section 11 output frame).
    Binary(Bytes),
}

/// The receiving half of a link.
pub(crate) enum Reader {
    Ws(SplitStream<Ws>),
    Stdio {
        stdout: BufReader<ChildStdout>,
        max: usize,
    },
}

/// The sending half of a link.
pub(crate) enum Writer {
    Ws(SplitSink<Ws, Message>),
    Stdio(BufWriter<ChildStdin>),
}

/// Where a client connects.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    WebSocket {
        url: String,
        bearer: Option<String>,
    },
    Stdio {
        program: PathBuf,
        args: Vec<OsString>,
    },
}

impl Endpoint {
    pub(crate) fn is_ws(&self) -> bool {
        matches!(self, Endpoint::WebSocket { .. })
    }
}

/// Opens a link; for stdio, also returns the server child (the caller owns it).
pub(crate) async fn open(
    endpoint: &Endpoint,
    max_message_bytes: usize,
) -> Result<(Reader, Writer, Option<Child>), Error> {
    match endpoint {
        Endpoint::WebSocket { url, bearer } => {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| Error::Connect(format!("bad URL {url:?}: {e}")))?;
            if let Some(token) = bearer {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| Error::Connect(format!("bad token: {e}")))?;
                request.headers_mut().insert("Authorization", value);
            }
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message_bytes))
                .max_frame_size(Some(max_message_bytes));
            let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .map_err(|e| Error::Connect(connect_error(url, e)))?;
            let (sink, stream) = ws.split();
            Ok((Reader::Ws(stream), Writer::Ws(sink), None))
        }
        Endpoint::Stdio { program, args } => {
            let mut child = Command::new(program)
                .args(args)
                // Its own process group: a Ctrl-C meant for the client's terminal does not
                // stop the server; it ends when its stdin does.
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| Error::Connect(format!("cannot start {}: {e}", program.display())))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(Error::Connect("the server child has no stdio".into()));
            };
            Ok((
                Reader::Stdio {
                    stdout: BufReader::with_capacity(1 << 20, stdout),
                    max: max_message_bytes,
                },
                Writer::Stdio(BufWriter::with_capacity(1 << 16, stdin)),
                Some(child),
            ))
        }
    }
}

fn connect_error(url: &str, e: tungstenite::Error) -> String {
    // Never echo the token in the URL.
    let shown = url.split('?').next().unwrap_or(url);
    match e {
        tungstenite::Error::Http(response) => {
            format!("{shown}: the server answered HTTP {}", response.status())
        }
        e => format!("{shown}: {e}"),
    }
}

impl Reader {
    /// The next message; `Ok(None)` at a clean end.
    pub(crate) async fn next(&mut self) -> Result<Option<Incoming>, String> {
        match self {
            Reader::Ws(stream) => loop {
                match stream.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(Message::Text(text))) => return Ok(Some(Incoming::Json(text.into()))),
                    Some(Ok(Message::Binary(bytes))) => {
                        return Ok(Some(if bytes.first() == Some(&b'{') {
                            Incoming::Json(bytes)
                        } else {
                            Incoming::Binary(bytes)
                        }));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(match frame {
                            Some(f) if !f.reason.is_empty() => {
                                format!("the server closed the connection: {}", f.reason)
                            }
                            _ => "the server closed the connection".to_owned(),
                        });
                    }
                    Some(Ok(_)) => {}
                }
            },
            Reader::Stdio { stdout, max } => {
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = stdout
                        .read_until(b'\n', &mut line)
                        .await
                        .map_err(|e| format!("reading the server's stdout: {e}"))?;
                    if n == 0 {
                        return Ok(None);
                    }
                    if line.len() > *max + 1 {
                        return Err(format!(
                            "the server sent a line of {} bytes (limit {max})",
                            line.len()
                        ));
                    }
                    if line.iter().any(|b| !b.is_ascii_whitespace()) {
                        return Ok(Some(Incoming::Json(Bytes::from(std::mem::take(&mut line)))));
                    }
                }
            }
        }
    }
}

impl Writer {
    /// Queues one message (without flushing).
    pub(crate) async fn feed(&mut self, text: String) -> Result<(), String> {
        match self {
            Writer::Ws(sink) => sink
                .feed(Message::text(text))
                .await
                .map_err(|e| e.to_string()),
            Writer::Stdio(stdin) => {
                let mut text = text.into_bytes();
                text.push(b'\n');
                stdin
                    .write_all(&text)
                    .await
                    .map_err(|e| format!("writing to the server's stdin: {e}"))
            }
        }
    }

    /// Sends what was queued.
    pub(crate) async fn flush(&mut self) -> Result<(), String> {
        match self {
            Writer::Ws(sink) => sink.flush().await.map_err(|e| e.to_string()),
            Writer::Stdio(stdin) => stdin
                .flush()
                .await
                .map_err(|e| format!("writing to the server's stdin: {e}")),
        }
    }

    /// Closes the link (WebSocket close, or stdin EOF so the server cleans up and exits).
    pub(crate) async fn close(&mut self) {
        match self {
            Writer::Ws(sink) => {
                let _ = sink.close().await;
            }
            Writer::Stdio(stdin) => {
                let _ = stdin.flush().await;
                let _ = stdin.shutdown().await;
            }
        }
    }
}
