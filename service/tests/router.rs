//! The router in process, without a socket or a binary (issue 28, 3): the answers of
//! service.md §2 and §4 that need no store. The spawned-binary tests (cli/tests/serve.rs)
//! keep what needs a real process: signals, TLS, connection limits, several nodes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use escx_service::{Limits, Parts, Service, router};
use tower::ServiceExt as _;

fn service(configure: impl FnOnce(&mut Service)) -> axum::Router {
    let parts =
        Parts { issuer: Vec::new(), operator: Vec::new(), ledger: None, registry: None, proofs: None };
    let mut service =
        Service::new(parts, Limits::default(), Arc::new(escx::now_unix), Arc::new(escx::now_unix));
    configure(&mut service);
    router(Arc::new(service), Limits::default())
}

/// One request through the router; the answer's status, its JSON error code (if any)
/// and its body.
async fn call(app: axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut request = request;
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    (status, code, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, body: &[u8]) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/cbor")
        .body(Body::from(body.to_vec()))
        .unwrap()
}

#[tokio::test]
async fn health_answers_ok() {
    let (status, _, body) = call(service(|_| {}), get("/healthz")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn every_part_not_given_is_not_served() {
    for request in [
        get("/.well-known/escx/issuer"),
        get("/v1/crl"),
        // A purchase needs a well-formed account token first (service.md §3).
        {
            let mut request = post("/v1/purchase", b"\xa0");
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, format!("Bearer {}", "ab".repeat(32)).parse().unwrap());
            request
        },
        post("/v1/redeem", b"\xa0"),
        post("/v1/content-key", b"\xa0"),
        post("/v1/reports", b"\xa0"),
        post("/v1/closes", b"\xa0"),
        get("/v1/statements"),
        get("/v1/rotations"),
        get("/v1/statements/1"),
        get("/v1/statements/1/proofs"),
        get("/registry/index.signed"),
        get("/registry/packages/acme/thermal/1.0.0.escx"),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, code, _) = call(service(|_| {}), request).await;
        assert_eq!((status, code.as_deref()), (StatusCode::NOT_FOUND, Some("not-served")), "{what}");
    }
}

#[tokio::test]
async fn a_purchase_without_a_bearer_token_is_unauthorized() {
    let (status, code, _) = call(service(|_| {}), post("/v1/purchase", b"\xa0")).await;
    assert_eq!((status, code.as_deref()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
}

#[tokio::test]
async fn unknown_paths_and_methods_have_their_own_codes() {
    let (status, code, _) = call(service(|_| {}), get("/v2/anything")).await;
    assert_eq!((status, code.as_deref()), (StatusCode::NOT_FOUND, Some("not-found")));
    let request = Request::builder().method(Method::DELETE).uri("/v1/crl").body(Body::empty()).unwrap();
    let (status, code, _) = call(service(|_| {}), request).await;
    assert_eq!((status, code.as_deref()), (StatusCode::METHOD_NOT_ALLOWED, Some("method-not-allowed")));
}

#[tokio::test]
async fn metrics_need_the_token_and_count_what_was_answered() {
    // Without a token configured, /metrics is not served at all.
    let (status, code, _) = call(service(|_| {}), get("/metrics")).await;
    assert_eq!((status, code.as_deref()), (StatusCode::NOT_FOUND, Some("not-served")));

    let token = "0123456789abcdef0123";
    let mut short = Service::new(
        Parts { issuer: Vec::new(), operator: Vec::new(), ledger: None, registry: None, proofs: None },
        Limits::default(),
        Arc::new(escx::now_unix),
        Arc::new(escx::now_unix),
    );
    assert_eq!(short.serve_metrics_to("0123456789abcde").unwrap_err().length, 15);
    let app = service(|s| s.serve_metrics_to(token).unwrap());
    let (status, code, _) = call(app.clone(), get("/metrics")).await;
    assert_eq!((status, code.as_deref()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let wrong = Request::get("/metrics").header(header::AUTHORIZATION, "Bearer 0123456789abcdef0124");
    let (status, _, _) = call(app.clone(), wrong.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A request answered before is counted.
    call(app.clone(), get("/v1/crl")).await;
    let right = Request::get("/metrics").header(header::AUTHORIZATION, format!("Bearer {token}"));
    let (status, _, body) = call(app, right.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("crl") && text.contains("404"), "{text}");
}
