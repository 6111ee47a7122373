# exec-server in a container: one server per sandbox, dev box or pod.
#
#   docker build -t exec-server .
#   printf '%s' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > token
#   docker run -d -p 8080:8080 \
#     --mount type=bind,src="$PWD/token",dst=/run/secrets/exec-server-token,readonly \
#     exec-server
#
# The token is read from /run/secrets/exec-server-token (a Docker or Compose secret, a
# Kubernetes Secret volume, or a bind mount); it is never printed (--no-token-in-url).
# See DEPLOY.md for TLS, Kubernetes and the memory limit to set.

# ---- build: the release binary, with the locked dependency versions -----------------
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package exec-server \
    && install -D -m 0755 target/release/exec-server /out/exec-server

# ---- runtime: a small Debian with a shell for the programs clients run ---------------
FROM ${BASE_IMAGE} AS runtime
# ca-certificates for programs that clients run; nothing else is added to the base.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 exec \
    && useradd --system --uid 10001 --gid exec --create-home --home-dir /home/exec \
       --shell /bin/sh exec
COPY --from=build /out/exec-server /usr/local/bin/exec-server
USER 10001:10001
WORKDIR /home/exec
EXPOSE 8080
# Ready = accepting sessions (503 at the connection limit or while shutting down). The
# probe is bash's /dev/tcp, so the image needs no HTTP client; it speaks plain HTTP: a
# container serving wss:// is probed by its orchestrator over HTTPS instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/exec-server"]
CMD ["serve", "--listen", "ws://0.0.0.0:8080", "--token-file", "/run/secrets/exec-server-token", "--no-token-in-url", "--log-format", "json"]
