//! A minimal JSON-RPC client for the benchmarks, over a WebSocket or a server's stdio: it decodes every output chunk (base64 or binary frame) it receives.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use exec_server_protocol::{
    Base64Bytes, ClientCapabilities, InitializeParams, InitializeResult, ProcessClosedNotification,
    ProcessExitedNotification, ProcessStartParams, ProcessWriteParams, decode_output_frame, method,
    notification,
};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait of the benchmarks may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Conn {
    Ws(Box<Ws>),
    Stdio {
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
}

/// What the server sent.
#[derive(Debug)]
pub enum Incoming {
    /// A `process/output` event; its decoded bytes are [`Client::chunk`].
    Output {
        process_id: String,
        seq: u64,
        len: usize,
    },
    /// A `process/exited` event.
    Exited(ProcessExitedNotification),
    /// A `process/closed` event.
    Closed(ProcessClosedNotification),
    /// A response.
    Response {
        id: Option<u64>,
        result: Option<Value>,
        error: Option<Value>,
    },
}

impl Incoming {
    /// The process an event belongs to (`None` for a response).
    pub fn process_id(&self) -> Option<&str> {
        match self {
            Incoming::Output { process_id, .. } => Some(process_id),
            Incoming::Exited(e) => Some(&e.process_id),
            Incoming::Closed(c) => Some(&c.process_id),
            Incoming::Response { .. } => None,
        }
    }
}

/// A JSON-RPC message as the bench reads it, in one pass over the text. Event params
/// are borrowed, so an output chunk's base64 text is decoded straight from the
/// received message (the protocol's own `ProcessOutputNotification` would decode it
/// into a fresh allocation, after a second pass over a `RawValue`).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    params: Option<EventParams<'a>>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// The params of `process/output`, `process/exited` and `process/closed` (the fields
/// of the protocol's notification types), borrowed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventParams<'a> {
    #[serde(borrow)]
    process_id: Cow<'a, str>,
    seq: u64,
    #[serde(default, borrow)]
    chunk: Option<Cow<'a, str>>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    timed_out: bool,
}

/// Where the last output chunk's bytes are.
enum Last {
    Decoded(usize),
    Frame(tokio_tungstenite::tungstenite::Bytes, usize),
}

/// Reads messages and decodes output chunks into a reused buffer.
struct Decoder {
    decoded: Vec<u8>,
    last: Last,
}

/// A connection to a server, initialized.
pub struct Client {
    conn: Conn,
    next_id: u64,
    decoder: Decoder,
    line: Vec<u8>,
    /// Whether the server granted binary output.
    pub binary: bool,
    /// The output window per process the server granted (SPEC section 13), if any.
    pub window: Option<u64>,
}

/// Awaits `fut` within [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| anyhow!("timed out after {DEADLINE:?} waiting for {what}"))
}

impl Client {
    /// Connects to `url` and runs the handshake, asking for binary output when `binary`.
    pub async fn ws(url: &str, binary: bool) -> Result<Client> {
        Client::ws_with(url, binary, None).await
    }

    /// [`Client::ws`], asking for an output window per process of `window` bytes.
    pub async fn ws_with(url: &str, binary: bool, window: Option<u64>) -> Result<Client> {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        let (ws, _) = within(
            "the WebSocket handshake",
            tokio_tungstenite::connect_async_with_config(url, Some(config), true),
        )
        .await?
        .context("WebSocket connect")?;
        Client::new(Conn::Ws(Box::new(ws)), binary, window).await
    }

    /// Runs the handshake over a stdio server's pipes.
    pub async fn stdio(stdin: ChildStdin, stdout: ChildStdout) -> Result<Client> {
        let stdout = BufReader::with_capacity(1 << 20, stdout);
        Client::new(Conn::Stdio { stdin, stdout }, false, None).await
    }

    async fn new(conn: Conn, binary: bool, window: Option<u64>) -> Result<Client> {
        let mut client = Client {
            conn,
            next_id: 0,
            decoder: Decoder::new(),
            line: Vec::new(),
            binary: false,
            window: None,
        };
        let params = InitializeParams {
            client_name: "xtask-bench".into(),
            client_version: None,
            resume_session_id: None,
            capabilities: (binary || window.is_some()).then_some(ClientCapabilities {
                output_window_bytes: window,
                binary_output: binary,
            }),
        };
        let result = client.call(method::INITIALIZE, &params).await?;
        let result: InitializeResult = serde_json::from_value(result)?;
        client.binary = result.capabilities.binary_output;
        client.window = result.capabilities.output_window_bytes;
        if binary && !client.binary {
            bail!("the server did not grant binary output");
        }
        if client.window != window {
            bail!("the server granted the window {:?}", client.window);
        }
        let initialized =
            serde_json::json!({"jsonrpc": "2.0", "method": notification::INITIALIZED});
        client.send_text(initialized.to_string()).await?;
        Ok(client)
    }

    async fn send_text(&mut self, text: String) -> Result<()> {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(Message::text(text)).await?,
            Conn::Stdio { stdin, .. } => {
                let mut line = text.into_bytes();
                line.push(b'\n');
                stdin.write_all(&line).await?;
                stdin.flush().await?;
            }
        }
        Ok(())
    }

    /// Sends a request and returns its id.
    pub async fn send_request<P: serde::Serialize>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let request =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(request.to_string()).await?;
        Ok(id)
    }

    /// A request's result; events that arrive meanwhile are dropped, so call it only
    /// when no process of this connection is running.
    pub async fn call<P: serde::Serialize>(&mut self, method: &str, params: &P) -> Result<Value> {
        let id = self.send_request(method, params).await?;
        loop {
            if let Incoming::Response {
                id: Some(got),
                result,
                error,
            } = within("a response", self.recv()).await??
                && got == id
            {
                if let Some(error) = error {
                    bail!("{method} failed: {error}");
                }
                return result.context("a response without result");
            }
        }
    }

    /// Sends `process/start` for `argv` and returns the request id.
    pub async fn start(&mut self, process_id: &str, argv: &[&str], tty: bool) -> Result<u64> {
        let params = ProcessStartParams {
            merge_stderr: false,
            process_id: process_id.into(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cwd: "/".into(),
            env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
            inherit_env: false,
            tty,
            pipe_stdin: false,
            arg0: None,
            size: None,
            timeout_ms: None,
            user: None,
        };
        self.send_request(method::PROCESS_START, &params).await
    }

    /// Acknowledges the output of `process_id` up to `seq` (`process/ack`).
    pub async fn ack(&mut self, process_id: &str, seq: u64) -> Result<()> {
        let ack = serde_json::json!({"jsonrpc": "2.0", "method": notification::PROCESS_ACK,
            "params": {"processId": process_id, "seq": seq}});
        self.send_text(ack.to_string()).await
    }

    /// Sends `process/write` of `bytes` and returns the request id.
    pub async fn write(&mut self, process_id: &str, bytes: &[u8]) -> Result<u64> {
        let params = ProcessWriteParams {
            wait_written: false,
            process_id: process_id.into(),
            chunk: Base64Bytes::from(bytes),
            write_id: None,
        };
        self.send_request(method::PROCESS_WRITE, &params).await
    }

    /// The bytes of the last output event [`Client::recv`] returned.
    pub fn chunk(&self) -> &[u8] {
        self.decoder.chunk()
    }

    /// The next message (no deadline: wrap it in [`within`]).
    pub async fn recv(&mut self) -> Result<Incoming> {
        match &mut self.conn {
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None => bail!("the server closed the connection"),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(text))) => {
                        return self.decoder.parse(text.as_bytes());
                    }
                    Some(Ok(Message::Binary(frame))) => {
                        let out = decode_output_frame(&frame).map_err(|e| anyhow!("{e}"))?;
                        let incoming = Incoming::Output {
                            process_id: out.process_id.to_owned(),
                            seq: out.seq,
                            len: out.chunk.len(),
                        };
                        let start = frame.len() - out.chunk.len();
                        self.decoder.last = Last::Frame(frame, start);
                        return Ok(incoming);
                    }
                    Some(Ok(Message::Close(_))) => bail!("the server closed the connection"),
                    Some(Ok(_)) => continue,
                }
            },
            Conn::Stdio { stdout, .. } => {
                let mut line = std::mem::take(&mut self.line);
                line.clear();
                let n = stdout.read_until(b'\n', &mut line).await?;
                if n == 0 {
                    bail!("the server closed its stdout");
                }
                let result = self.decoder.parse(&line);
                self.line = line;
                result
            }
        }
    }

    /// Closes the connection (best effort).
    pub async fn close(self) {
        match self.conn {
            Conn::Ws(mut ws) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), SinkExt::close(&mut ws)).await;
            }
            Conn::Stdio { stdin, .. } => drop(stdin),
        }
    }
}

impl Decoder {
    fn new() -> Decoder {
        Decoder {
            decoded: Vec::new(),
            last: Last::Decoded(0),
        }
    }

    fn chunk(&self) -> &[u8] {
        match &self.last {
            Last::Decoded(n) => &self.decoded[..*n],
            Last::Frame(frame, start) => &frame[*start..],
        }
    }

    fn parse(&mut self, text: &[u8]) -> Result<Incoming> {
        let envelope: Envelope<'_> = serde_json::from_slice(text)
            .with_context(|| format!("invalid JSON: {}", String::from_utf8_lossy(text)))?;
        let Some(name) = envelope.method else {
            return Ok(Incoming::Response {
                id: envelope.id,
                result: envelope.result,
                error: envelope.error,
            });
        };
        let p = envelope.params.context("a notification without params")?;
        match &*name {
            notification::PROCESS_OUTPUT => {
                let chunk = p.chunk.context("an output without chunk")?;
                let engine = &base64_simd::STANDARD;
                let need = engine.estimated_decoded_length(chunk.len());
                if self.decoded.len() < need {
                    self.decoded.resize(need, 0);
                }
                let len = engine
                    .decode(
                        chunk.as_bytes(),
                        base64_simd::Out::from_slice(&mut self.decoded[..need]),
                    )
                    .map_err(|e| anyhow!("invalid base64 in an output chunk: {e}"))?
                    .len();
                self.last = Last::Decoded(len);
                Ok(Incoming::Output {
                    process_id: p.process_id.into_owned(),
                    seq: p.seq,
                    len,
                })
            }
            notification::PROCESS_EXITED => Ok(Incoming::Exited(ProcessExitedNotification {
                process_id: p.process_id.into_owned(),
                seq: p.seq,
                exit_code: p.exit_code.context("an exit without exitCode")?,
                signal: p.signal,
                timed_out: p.timed_out,
            })),
            notification::PROCESS_CLOSED => Ok(Incoming::Closed(ProcessClosedNotification {
                timed_out: false,
                process_id: p.process_id.into_owned(),
                seq: p.seq,
            })),
            other => bail!("unexpected notification {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::{ProcessOutputNotification, Stream};

    fn parse(message: serde_json::Value) -> (Decoder, Incoming) {
        let mut client = Decoder::new();
        let incoming = client
            .parse(message.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        (client, incoming)
    }

    #[test]
    fn events_read_what_the_protocol_writes() {
        let output = ProcessOutputNotification {
            process_id: "p\"1".into(),
            seq: 9,
            stream: Stream::Stderr,
            chunk: Base64Bytes::from(&[0u8, 1, 2, 255][..]),
        };
        let message = serde_json::json!({"jsonrpc": "2.0", "method": notification::PROCESS_OUTPUT, "params": output});
        let (client, incoming) = parse(message);
        assert!(
            matches!(incoming, Incoming::Output { ref process_id, seq: 9, len: 4 } if process_id == "p\"1"),
            "{incoming:?}"
        );
        assert_eq!(client.chunk(), [0, 1, 2, 255]);

        let exited = ProcessExitedNotification {
            process_id: "p".into(),
            seq: 10,
            exit_code: 137,
            signal: Some("SIGKILL".into()),
            timed_out: true,
        };
        let message = serde_json::json!({"jsonrpc": "2.0", "method": notification::PROCESS_EXITED, "params": exited});
        assert!(matches!(parse(message).1, Incoming::Exited(e) if e == exited));

        let closed = ProcessClosedNotification {
            timed_out: false,
            process_id: "p".into(),
            seq: 11,
        };
        let message = serde_json::json!({"jsonrpc": "2.0", "method": notification::PROCESS_CLOSED, "params": closed});
        assert!(matches!(parse(message).1, Incoming::Closed(c) if c == closed));
    }
}
