//! The HTTP side of the server: `/healthz`, `/livez`, `/readyz`, `/metrics`, Origin (403), token (401) and connection-limit (503) checks, then the WebSocket upgrade.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use crate::server::Shared;

/// The response body type of every HTTP answer.
pub(crate) type Body = Full<Bytes>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one HTTP request; an accepted upgrade spawns the WebSocket connection.
pub(crate) async fn route(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(route_inner(&shared, request))
}

/// `/readyz`: whether a new connection would get a session now.
fn readiness(shared: &Shared) -> Response<Body> {
    if shared.stop.is_cancelled() || shared.rpc.is_shutting_down() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    if shared.connections.available_permits() == 0 {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: at the connection limit (--max-connections)\n",
        );
    }
    text(StatusCode::OK, "ready\n")
}

/// `/metrics` in the Prometheus text format.
fn metrics(shared: &Shared) -> Response<Body> {
    let m = exec_server_metrics::metrics();
    let (attached, detached) = shared.rpc.session_states();
    m.set_sessions(attached, detached);
    let mut response = Response::new(Full::new(Bytes::from(m.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(exec_server_metrics::CONTENT_TYPE),
    );
    response
}

fn unauthorized() -> Response<Body> {
    exec_server_metrics::metrics().refused("auth");
    let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong token\n");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    response
}

fn route_inner(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let get = request.method() == Method::GET;
    // Unauthenticated: they reveal only that the server is up and whether it takes
    // sessions.
    match path {
        "/healthz" | "/livez" if get => return text(StatusCode::OK, "ok"),
        "/readyz" if get => return readiness(shared),
        _ => {}
    }
    if let Some(origin) = request.headers().get(ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| {
            let o = o.trim_end_matches('/');
            shared
                .config
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
        });
        if !allowed {
            exec_server_metrics::metrics().refused("origin");
            tracing::info!(origin = ?origin, "refused a foreign Origin");
            return text(
                StatusCode::FORBIDDEN,
                "origin not allowed (see --allow-origin)\n",
            );
        }
    }
    let authorized = shared
        .config
        .auth
        .allows(request.headers(), request.uri().query());
    if path == "/metrics" && get {
        if !authorized && !shared.config.metrics_public {
            return unauthorized();
        }
        return metrics(shared);
    }
    if !authorized {
        return unauthorized();
    }
    if path != "/" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !soketto::handshake::http::is_upgrade_request(&request) {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint\n",
        );
    }
    let permit: OwnedSemaphorePermit = match shared.connections.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            exec_server_metrics::metrics().refused("limit");
            tracing::warn!(
                max = shared.config.max_connections,
                "refused a connection: too many connections"
            );
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "limit reached: too many connections (--max-connections)\n",
            );
        }
    };
    let mut handshake = soketto::handshake::http::Server::new();
    match handshake.receive_request(&request) {
        Ok(response) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        crate::connection::run(shared, handshake, upgraded).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
                drop(permit);
            });
            response.map(|()| Full::default())
        }
        Err(e) => {
            tracing::debug!("bad upgrade request: {e}");
            text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n")
        }
    }
}
