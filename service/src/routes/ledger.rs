//! The ledger's routes (service.md §2): signed statements, rotations and their proofs,
//! read-only.

use crate::*;

pub(crate) async fn statements(State(service): State<Shared>) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(lock(&service.ledger, "ledger")?.statements()?)).await?;
    Ok(axum::Json(serde_json::json!({ "ok": true, "statements": list })).into_response())
}

/// The operator key's rotation statements, oldest first (settlement.md §4.5): with the
/// ledger's first key, what an auditor needs to verify every statement.
pub(crate) async fn rotations(State(service): State<Shared>) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(lock(&service.ledger, "ledger")?.operator_rotations()?)).await?;
    let lines: Vec<String> = list.iter().map(|r| r.to_line()).collect();
    Ok(axum::Json(serde_json::json!({ "ok": true, "rotations": lines })).into_response())
}

pub(crate) async fn statement(
    State(service): State<Shared>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unknown =
        || ApiError::new(StatusCode::NOT_FOUND, "unknown-statement", format!("no statement {seq:?}"));
    let number: u64 = seq.parse().map_err(|_| unknown())?;
    let bytes = blocking(move || Ok(lock(&service.ledger, "ledger")?.statement(number)?)).await?;
    Ok(tagged(&headers, bytes, "application/cbor", None))
}

pub(crate) async fn statement_proofs(
    State(service): State<Shared>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let number: Option<u64> = seq.parse().ok();
    let missing =
        move || ApiError::new(StatusCode::NOT_FOUND, "no-proofs", format!("no proofs for statement {seq:?}"));
    let number = number.ok_or_else(missing.clone())?;
    let bytes = blocking(move || {
        let dir = service.proofs.as_deref().ok_or_else(|| not_served("proofs"))?;
        read_inside(dir, &dir.join(format!("statement-{number}.proofs")))
            .map_err(|e| if e.status == StatusCode::NOT_FOUND { missing() } else { e })
    })
    .await?;
    Ok(tagged(&headers, bytes, "application/cbor", None))
}
