//! The MCP endpoint: bearer tokens in front of rmcp's Streamable HTTP
//! service (stateless, JSON responses), and the tool handler.
use super::tools::{self, ToolDef};
use super::{args_digest, schema, Agent, Scope, ToolError};
use crate::listen::{ListenCounters, ListenLimits};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who is calling: put into the HTTP request's extensions after the token check.
#[derive(Debug, Clone)]
struct Caller {
    agent: String,
    scope: Scope,
}

#[derive(Debug, Clone)]
struct Handler {
    agent: Arc<Agent>,
    defs: Arc<Vec<ToolDef>>,
}

fn to_tool(d: &ToolDef) -> Tool {
    let obj = |v: &Value| Arc::new(v.as_object().cloned().unwrap_or_default());
    Tool::new(d.name, d.description.clone(), obj(&d.input))
        .with_raw_output_schema(obj(&d.output))
        .with_annotations(ToolAnnotations::new().read_only(d.read_only).destructive(false).open_world(false))
}

impl Handler {
    async fn call(&self, caller: &Caller, name: &str, args: Value) -> Result<CallToolResult, McpError> {
        let t0 = Instant::now();
        let digest = args_digest(&args);
        let a = &self.agent;
        let def = self.defs.iter().find(|d| d.name == name);
        let checked: Result<&ToolDef, ToolError> = (|| {
            a.take_call(&caller.agent).map_err(|ms| ToolError::Refused {
                why: format!(
                    "rate limit: {} calls per second (burst {}) for agent '{}'",
                    a.limits().calls_per_s,
                    a.limits().burst,
                    caller.agent
                ),
                retry_after_ms: Some(ms),
            })?;
            let def = def.ok_or_else(|| ToolError::Invalid(format!("unknown tool '{name}'")))?;
            if def.mutate && caller.scope != Scope::Mutate {
                return Err(ToolError::Refused {
                    why: format!(
                        "tool '{name}' needs the mutate scope; agent '{}' has the {} scope",
                        caller.agent,
                        caller.scope.name()
                    ),
                    retry_after_ms: None,
                });
            }
            schema::validate(&def.input, &args, "").map_err(ToolError::Invalid)?;
            if def.mutate {
                a.take_mutation(&caller.agent).map_err(|ms| ToolError::Refused {
                    why: format!(
                        "mutation budget: {} gate changes per hour for agent '{}' are spent",
                        a.limits().mutations_per_hour,
                        caller.agent
                    ),
                    retry_after_ms: Some(ms),
                })?;
            }
            Ok(def)
        })();
        let r = match checked {
            Ok(def) => {
                let r = tools::run(a, &caller.agent, caller.scope, def.name, args).await;
                if def.mutate && r.is_err() {
                    a.return_mutation(&caller.agent);
                }
                r
            }
            Err(e) => Err(e),
        };
        let (outcome, error, rows) = match &r {
            Ok((_, rows)) => ("ok", None, *rows),
            Err(e) => (e.outcome(), Some(e.message()), 0),
        };
        a.record(&caller.agent, caller.scope, name, &digest, outcome, error, rows, t0.elapsed()).await;
        match r {
            Ok((v, _)) => Ok(CallToolResult::structured(v)),
            // An unknown tool is a protocol error (the request cannot be routed).
            Err(ToolError::Invalid(m)) if def.is_none() && m.starts_with("unknown tool") => {
                let known: Vec<&str> = self.defs.iter().map(|d| d.name).collect();
                Err(McpError::invalid_params(format!("{m}; tools: {}", known.join(", ")), None))
            }
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.message())])),
        }
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wirefold-core", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Wirefold core: query stored flows and the promotion gates; propose, apply and roll back gate changes. See docs/agent-api.md.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.defs.iter().map(to_tool).collect()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = context
            .extensions
            .get::<hyper::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("no authenticated caller", None))?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        self.call(&caller, &request.name, args).await.map(CallToolResponse::from)
    }
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

fn plain(status: hyper::StatusCode, msg: &str) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if status == hyper::StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    }
    r
}

/// A TLS acceptor for the MCP port from a PEM certificate chain and key
/// (HTTP/1.1 by ALPN; TLS 1.2 and 1.3 with rustls' safe defaults).
pub fn tls_acceptor(cert: &[u8], key: &[u8]) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>().map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no CERTIFICATE block in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serve MCP at `/mcp` on `listener` (inside the core's runtime), over TLS
/// when `tls` is given.
pub async fn serve_mcp(listener: tokio::net::TcpListener, agent: Arc<Agent>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let local = listener.local_addr().ok();
    let defs = Arc::new(tools::tools(agent.limits()));
    let handler = Handler { agent: agent.clone(), defs };
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), "[::1]".into()];
    if let Some(a) = local {
        hosts.push(a.ip().to_string());
        hosts.push(a.to_string());
    }
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_sse_keep_alive(None);
    let h2 = handler.clone();
    let mcp: StreamableHttpService<Handler, NeverSessionManager> =
        StreamableHttpService::new(move || Ok(h2.clone()), Arc::new(NeverSessionManager::default()), config);
    let limits = ListenLimits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
    let counters = Arc::new(ListenCounters::default());
    let mut conns = crate::listen::accept_loop(listener, limits, counters, "wirefold mcp");
    while let Some(c) = conns.recv().await {
        let Ok(conn) = c else { continue };
        let (mcp, agent, tls) = (mcp.clone(), agent.clone(), tls.clone());
        tokio::spawn(async move {
            let counters = agent.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let (mut mcp, agent) = (mcp.clone(), agent.clone());
                async move {
                    use tower_service::Service;
                    if req.uri().path() != "/mcp" {
                        return Ok::<_, std::convert::Infallible>(plain(
                            hyper::StatusCode::NOT_FOUND,
                            "the MCP endpoint is /mcp",
                        ));
                    }
                    let who = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .and_then(|t| agent.authenticate(t.trim()));
                    let Some((name, scope)) = who else {
                        agent.unauthenticated.fetch_add(1, Relaxed);
                        return Ok(plain(hyper::StatusCode::UNAUTHORIZED, "missing or unknown agent token"));
                    };
                    req.extensions_mut().insert(Caller { agent: name, scope });
                    mcp.call(req).await
                }
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 << 10)
                .clone();
            match tls {
                None => {
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(conn), svc).await;
                }
                Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                    }
                    Ok(Err(_)) | Err(_) => {
                        counters.tls_failures.fetch_add(1, Relaxed);
                    }
                },
            }
        });
    }
}
