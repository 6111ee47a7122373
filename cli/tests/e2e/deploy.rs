//! Helpers of the deployment tests (TLS, health, metrics, logs, socket activation): a server started with any `--listen`, its stderr kept, a test PKI made with rcgen, and a `wss://` client that trusts only that PKI.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Kind, ServerProc, bin, unb64, within};

/// What a server wrote on stderr so far, line by line.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
}

/// `exec-server serve ARGS` (no token from our environment, `env` added), not spawned.
pub fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("serve")
        .args(args)
        .env_remove("EXEC_SERVER_TOKEN")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Spawns a WebSocket server from `command` (see [`serve`]), reads its URL line and
/// keeps its stderr.
pub async fn launch(mut command: Command) -> anyhow::Result<(ServerProc, Logs)> {
    command.stderr(std::process::Stdio::piped());
    let mut server = ServerProc::launch(Kind::Ws, command).await?;
    let stderr = server.child.stderr.take().context("stderr")?;
    let logs = Logs::default();
    let sink = logs.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.0.lock().unwrap().push(line);
        }
    });
    Ok((server, logs))
}

/// `(host, port)` of a `ws://` or `wss://` URL.
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = authority.rsplit_once(':').expect("a port in the URL");
    (host.to_owned(), port.parse().expect("a numeric port"))
}

/// A certificate authority made for one test.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for these DNS names or IP addresses.
    pub fn server(&self, names: &[&str]) -> Identity {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Identity {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A TLS client configuration that trusts only `ca_pem`, presenting `identity` if given.
pub fn client_tls(ca_pem: &str, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(id.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    Arc::new(config)
}

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Opens a TLS connection to the URL's host and port with `tls`.
pub async fn tls_connect(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let (host, port) = host_port(url);
    let tcp = within(
        "a TCP connection",
        TcpStream::connect((host.as_str(), port)),
    )
    .await?;
    let name = ServerName::try_from(host.clone())?;
    let stream = within(
        "a TLS handshake",
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await?;
    Ok(stream)
}

/// A WebSocket over TLS to `url` (as printed, token included).
pub async fn wss(url: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Wss> {
    let stream = tls_connect(url, tls).await?;
    let (ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(url, stream),
    )
    .await?;
    Ok(ws)
}

/// The next JSON message on `ws`.
async fn next_json<S>(ws: &mut WebSocketStream<S>) -> anyhow::Result<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => anyhow::bail!("unexpected message {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the connection closed"),
        }
    }
}

/// Sends a request and returns its result (failing on an error response); notifications
/// that arrive meanwhile are dropped.
async fn call<S>(
    ws: &mut WebSocketStream<S>,
    id: u64,
    method: &str,
    params: Value,
) -> anyhow::Result<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(request.to_string())).await?;
    loop {
        let message = next_json(ws).await?;
        if message["id"] == json!(id) {
            anyhow::ensure!(message.get("error").is_none(), "{method}: {message}");
            return Ok(message["result"].clone());
        }
    }
}

/// `initialize` and `initialized`; returns the session id.
pub async fn handshake<S>(ws: &mut WebSocketStream<S>) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let result = call(ws, 1, "initialize", json!({"clientName": "deploy-test"})).await?;
    let note = json!({"jsonrpc": "2.0", "method": "initialized"});
    ws.send(Message::text(note.to_string())).await?;
    Ok(result["sessionId"]
        .as_str()
        .context("sessionId")?
        .to_owned())
}

/// Runs `argv` as `process_id` and returns its stdout once it has closed.
pub async fn run<S>(
    ws: &mut WebSocketStream<S>,
    process_id: &str,
    argv: &[&str],
) -> anyhow::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "process/start",
        "params": {"processId": process_id, "argv": argv, "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin"}}});
    ws.send(Message::text(request.to_string())).await?;
    let mut out = Vec::new();
    loop {
        let message = next_json(ws).await?;
        if message["id"] == json!(id) {
            anyhow::ensure!(message.get("error").is_none(), "start: {message}");
            continue;
        }
        if message["params"]["processId"] != json!(process_id) {
            continue;
        }
        match message["method"].as_str() {
            Some("process/output") if message["params"]["stream"] == "stdout" => {
                out.extend(unb64(&message["params"]["chunk"]));
            }
            Some("process/closed") => return Ok(out),
            _ => {}
        }
    }
}
