//! `wss://`: certificates generated here, a client that trusts only them, client certificates, and a certificate reloaded on SIGHUP without dropping connections.

use crate::client::{TempDir, http_get, wait_until, within};
use crate::deploy::{Identity, Pki, client_tls, handshake, launch, run, serve, tls_connect, wss};

/// Writes `id` as `NAME.crt` and `NAME.key` in `dir`; returns their paths.
fn write_identity(dir: &TempDir, name: &str, id: &Identity) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &id.cert).unwrap();
    std::fs::write(&key, &id.key).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[tokio::test]
async fn wss_serves_clients_that_trust_its_certificate_and_no_one_else() -> anyhow::Result<()> {
    let dir = TempDir::new("tls");
    let pki = Pki::new("test CA");
    let (cert, key) = write_identity(&dir, "server", &pki.server(&["localhost", "127.0.0.1"]));
    let (server, _logs) = launch(serve(
        &[
            "--listen",
            "wss://localhost:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    ))
    .await?;
    let url = server.url().to_owned();
    assert!(url.starts_with("wss://localhost:"), "{url}");
    assert!(url.contains("/?token="), "{url}");

    // A client that trusts only this CA runs a command over the printed URL.
    let mut ws = wss(&url, client_tls(&pki.ca_pem(), None)).await?;
    handshake(&mut ws).await?;
    assert_eq!(
        run(&mut ws, "p1", &["echo", "over tls"]).await?,
        b"over tls\n"
    );

    // One that trusts another CA refuses the server's certificate.
    let stranger = Pki::new("another CA");
    let refused = tls_connect(&url, client_tls(&stranger.ca_pem(), None)).await;
    assert!(
        refused.is_err(),
        "a certificate from an untrusted CA was accepted"
    );

    // Plain HTTP on the TLS port gets no answer the client could mistake for one.
    let addr = url
        .trim_start_matches("wss://")
        .split('/')
        .next()
        .unwrap()
        .replace("localhost", "127.0.0.1");
    assert!(
        http_get(&addr, "/healthz", &[]).await.is_err(),
        "plain HTTP was answered on the TLS port"
    );
    Ok(())
}

#[tokio::test]
async fn tls_flags_must_match_the_scheme() -> anyhow::Result<()> {
    let dir = TempDir::new("tls-flags");
    let pki = Pki::new("test CA");
    let (cert, key) = write_identity(&dir, "server", &pki.server(&["localhost"]));
    let cases: [(&[&str], &str); 3] = [
        (&["--listen", "wss://127.0.0.1:0"], "needs --tls-cert"),
        (
            &[
                "--listen",
                "ws://127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
            "need --listen wss://",
        ),
        (
            &[
                "--listen",
                "wss://127.0.0.1:0",
                "--tls-cert",
                &key,
                "--tls-key",
                &key,
            ],
            "--tls-cert",
        ),
    ];
    for (args, says) in cases {
        let output = within("the server to refuse", serve(args, &[]).output()).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed a URL");
    }
    Ok(())
}

#[tokio::test]
async fn client_certificates_are_required_with_tls_client_ca() -> anyhow::Result<()> {
    let dir = TempDir::new("mtls");
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let (cert, key) = write_identity(&dir, "server", &server_pki.server(&["localhost"]));
    let client_ca = dir.join("clients.pem");
    std::fs::write(&client_ca, client_pki.ca_pem())?;
    let (server, _logs) = launch(serve(
        &[
            "--listen",
            "wss://localhost:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca.to_string_lossy(),
        ],
        &[],
    ))
    .await?;
    let url = server.url().to_owned();
    let trust = server_pki.ca_pem();

    let alice = client_pki.client("alice");
    let mut ws = wss(&url, client_tls(&trust, Some(&alice))).await?;
    handshake(&mut ws).await?;
    assert_eq!(run(&mut ws, "p", &["echo", "mutual"]).await?, b"mutual\n");

    // Without a certificate, or with one the client CA did not issue, no WebSocket opens
    // (with TLS 1.3 the refusal may arrive only after the client's side of the handshake).
    let mallory = Pki::new("mallory CA").client("mallory");
    for identity in [None, Some(&mallory)] {
        let attempt = wss(&url, client_tls(&trust, identity)).await;
        assert!(
            attempt.is_err(),
            "a client with {:?} was let in",
            identity.map(|_| "a foreign certificate")
        );
    }
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones()
-> anyhow::Result<()> {
    let dir = TempDir::new("tls-reload");
    let old_pki = Pki::new("old CA");
    let (cert, key) = write_identity(&dir, "server", &old_pki.server(&["localhost"]));
    let (server, logs) = launch(serve(
        &[
            "--listen",
            "wss://localhost:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--log-level",
            "info",
        ],
        &[],
    ))
    .await?;
    let url = server.url().to_owned();
    let mut before = wss(&url, client_tls(&old_pki.ca_pem(), None)).await?;
    handshake(&mut before).await?;

    // A broken key: the reload fails and the old certificate stays in use.
    std::fs::write(&key, "not a key")?;
    server.signal(libc::SIGHUP);
    wait_until("the failed reload to be logged", || {
        logs.contains("TLS reload failed")
    })
    .await;
    let mut still_old = wss(&url, client_tls(&old_pki.ca_pem(), None)).await?;
    handshake(&mut still_old).await?;

    // The renewed certificate, from another CA, is used for connections after SIGHUP.
    let new_pki = Pki::new("new CA");
    write_identity(&dir, "server", &new_pki.server(&["localhost"]));
    server.signal(libc::SIGHUP);
    wait_until("the reload to be logged", || {
        logs.contains("TLS certificate reloaded")
    })
    .await;
    let mut after = wss(&url, client_tls(&new_pki.ca_pem(), None)).await?;
    handshake(&mut after).await?;
    assert_eq!(run(&mut after, "new", &["echo", "new"]).await?, b"new\n");
    assert!(
        tls_connect(&url, client_tls(&old_pki.ca_pem(), None))
            .await
            .is_err(),
        "a new connection still got the old certificate"
    );

    // The connections opened before the reload were not dropped.
    assert_eq!(run(&mut before, "old", &["echo", "old"]).await?, b"old\n");
    assert_eq!(
        run(&mut still_old, "old2", &["echo", "kept"]).await?,
        b"kept\n"
    );
    Ok(())
}
