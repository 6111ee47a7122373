//! The deployment files, checked without a container runtime or a cluster: the Dockerfile parsed for its stages, user and HEALTHCHECK (whose command is run against a real server), every `serve` flag the Dockerfile, the systemd units and the Kubernetes manifests use is one the binary has, the units' hardening, and README's references.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_exec-server")
}

/// Every `--flag` that `exec-server serve --help` documents.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    flags_in(&String::from_utf8_lossy(&out.stdout))
}

/// The `--flag` tokens of `text` (up to `=` or anything not a flag character).
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']'))
        .filter_map(|t| t.strip_prefix("--"))
        .map(|t| {
            t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or("")
        })
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .map(|t| format!("--{t}"))
        .collect()
}

/// One Dockerfile instruction: its keyword (upper case) and its arguments, with line
/// continuations joined and comments dropped.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "a continuation at the end of the Dockerfile"
    );
    out
}

/// One build stage: its base image (with `ARG` defaults substituted), name and
/// instructions.
#[derive(Debug)]
struct Stage {
    base: String,
    name: String,
    body: Vec<Instruction>,
}

fn stages(all: &[Instruction]) -> Vec<Stage> {
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for i in all {
        match (i.keyword.as_str(), stages.last_mut()) {
            ("ARG", None) => {
                if let Some((k, v)) = i.args.split_once('=') {
                    args.insert(format!("${{{k}}}"), v.to_owned());
                }
            }
            ("FROM", _) => {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let (image, name) = match words.as_slice() {
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => (*image, *name),
                    _ => panic!("every stage is named: FROM {}", i.args),
                };
                let base = args.get(image).cloned().unwrap_or_else(|| image.to_owned());
                stages.push(Stage {
                    base,
                    name: name.to_owned(),
                    body: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.body.push(i.clone()),
            (keyword, None) => panic!("{keyword} before the first FROM"),
        }
    }
    stages
}

/// The JSON array of an exec-form instruction.
fn exec_form(i: &Instruction) -> Vec<String> {
    serde_json::from_str(&i.args)
        .unwrap_or_else(|e| panic!("{} is not in exec form ({e}): {}", i.keyword, i.args))
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_health_check() {
    let all = instructions(&read("Dockerfile"));
    let stages = stages(&all);
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let (build, runtime) = (&stages[0], stages.last().unwrap());
    assert!(build.base.starts_with("rust:"), "{}", build.base);
    let builds = build
        .body
        .iter()
        .any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"));
    assert!(builds, "the build stage builds the locked release binary");

    // The final image: small, the binary copied from the build stage, no toolchain.
    assert!(
        runtime.base.ends_with("-slim") || runtime.base.contains("distroless"),
        "a small base image: {}",
        runtime.base
    );
    let copies = runtime
        .body
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        copies,
        [format!(
            "--from={} /out/exec-server /usr/local/bin/exec-server",
            build.name
        )]
    );

    // Not root.
    let users: Vec<&str> = runtime
        .body
        .iter()
        .filter(|i| i.keyword == "USER")
        .map(|i| i.args.as_str())
        .collect();
    let user = *users.last().expect("a USER in the final stage");
    let uid = user.split(':').next().unwrap();
    assert!(
        !matches!(uid, "0" | "root" | ""),
        "the final stage runs as {user}"
    );

    // The server: token from a file (a secret), never printed; listening where EXPOSE says.
    let entrypoint = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .map(exec_form)
        .expect("an ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/exec-server"]);
    let cmd = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "CMD")
        .map(exec_form)
        .expect("a CMD");
    assert_eq!(cmd[0], "serve");
    let arg = |flag: &str| {
        cmd.iter()
            .position(|a| a == flag)
            .and_then(|i| cmd.get(i + 1))
            .cloned()
    };
    assert_eq!(
        arg("--token-file").as_deref(),
        Some("/run/secrets/exec-server-token")
    );
    assert!(cmd.iter().any(|a| a == "--no-token-in-url"));
    let listen = arg("--listen").expect("--listen");
    let exposed = runtime
        .body
        .iter()
        .find(|i| i.keyword == "EXPOSE")
        .expect("EXPOSE");
    assert!(listen.ends_with(&format!(":{}", exposed.args)), "{listen}");
    let known = serve_flags();
    for flag in flags_in(&cmd.join(" ")) {
        assert!(known.contains(&flag), "CMD uses {flag}, which serve lacks");
    }

    // The health check probes /readyz of that port.
    let health = runtime
        .body
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("a HEALTHCHECK in the final stage");
    assert!(health.args.contains("/readyz"), "{}", health.args);
    assert!(health.args.contains(&format!("/{}", exposed.args)));

    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), "{entry}");
    }
}

/// The HEALTHCHECK's command (exec form), with the port `from` replaced by `to`.
fn health_command(from: &str, to: u16) -> Vec<String> {
    let all = instructions(&read("Dockerfile"));
    let health = all
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("HEALTHCHECK");
    let (_, cmd) = health
        .args
        .split_once(" CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(cmd.trim()).expect("exec form");
    argv.into_iter()
        .map(|a| a.replace(&format!("/{from}"), &format!("/{to}")))
        .collect()
}

#[test]
fn the_health_check_passes_on_a_ready_server_and_fails_at_the_connection_limit() {
    let dir = std::env::temp_dir().join(format!("exec-server-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "health-check-token").unwrap();
    let mut server = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "ws://127.0.0.1:0",
            "--max-connections",
            "1",
        ])
        .arg("--token-file")
        .arg(&token)
        .args(["--no-token-in-url", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let port: u16 = url
        .trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let probe = || {
        let argv = health_command("8080", port);
        Command::new(&argv[0]).args(&argv[1..]).status().unwrap()
    };
    let ready = probe();

    // Hold the only connection: no session can be had, the probe must fail.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    write!(
        held,
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer health-check-token\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    held.read_exact(&mut head).unwrap();
    let at_limit = probe();

    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(&head, b"HTTP/1.1 101");
    assert!(ready.success(), "the health check failed on a ready server");
    assert!(
        !at_limit.success(),
        "the health check passed at the connection limit"
    );
}

/// `[Section]` → key → values (a key may repeat), with continuations joined.
fn unit(path: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in read(path).lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#') || t.starts_with(';')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let entry = std::mem::take(&mut pending);
        if let Some(name) = entry.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: {entry}"));
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_units_activate_the_socket_and_harden_the_service() {
    let socket = unit("deploy/systemd/exec-server.socket");
    assert!(socket["Socket"].contains_key("ListenStream"));
    assert_eq!(socket["Install"]["WantedBy"], ["sockets.target"]);

    let service = unit("deploy/systemd/exec-server.service");
    let s = &service["Service"];
    let one = |key: &str| -> &str { &s.get(key).unwrap_or_else(|| panic!("no {key}"))[0] };
    assert_eq!(service["Unit"]["Requires"], ["exec-server.socket"]);
    let exec = one("ExecStart");
    assert!(
        exec.contains("--listen wss://systemd") || exec.contains("--listen ws://systemd"),
        "{exec}"
    );
    assert!(exec.contains("--token-file %d/token"), "{exec}");
    assert!(exec.contains("--no-token-in-url"), "{exec}");
    let known = serve_flags();
    for flag in flags_in(exec) {
        assert!(
            known.contains(&flag),
            "ExecStart uses {flag}, which serve lacks"
        );
    }
    assert!(one("LoadCredential").starts_with("token:"));
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillMode"), "mixed");
    // Hardening; and nothing that would stop it from running programs as itself.
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(!s.contains_key("MemoryDenyWriteExecute"));
    assert!(!s.contains_key("SystemCallFilter"));
    assert_ne!(one("User"), "root");
}

#[test]
fn the_kubernetes_manifests_use_only_flags_serve_has() {
    let known = serve_flags();
    for path in [
        "deploy/kubernetes/exec-server.yaml",
        "deploy/kubernetes/sandbox.yaml",
    ] {
        let text = read(path);
        let args: String = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|f| format!("--{f} "))
            .collect();
        let used = flags_in(&args);
        assert!(used.contains("--token-file"), "{path}: {used:?}");
        for flag in used {
            assert!(
                known.contains(&flag),
                "{path} uses {flag}, which serve lacks"
            );
        }
        for probe in [
            "path: /readyz",
            "path: /livez",
            "secretName: exec-server-token",
        ] {
            assert!(text.contains(probe), "{path}: no {probe}");
        }
        assert!(
            text.contains("automountServiceAccountToken: false"),
            "{path}"
        );
    }
}

#[test]
fn readme_points_to_every_deployment_file() {
    let readme = read("README.md");
    for reference in [
        "DEPLOY.md",
        "Dockerfile",
        "deploy/systemd/exec-server.service",
        "deploy/systemd/exec-server.socket",
        "deploy/kubernetes/exec-server.yaml",
        "deploy/kubernetes/sandbox.yaml",
        "deploy/kubernetes/ingress.yaml",
    ] {
        assert!(
            readme.contains(reference),
            "README does not mention {reference}"
        );
        assert!(repo().join(reference).exists(), "{reference} is missing");
    }
}
