//! The operator's metering routes (service.md §2): report and close ingest.

use crate::*;

pub(crate) const INGEST_BODY_MAX: usize = 1024 * 1024;

/// A report's or close's body, once its client is within the ingest rate (service.md §4).
pub(crate) async fn ingest_body(
    service: &Service,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    service.ingest_limit.check(client_address(peer.ip(), headers, &service.trusted_proxies))?;
    read_body(body, INGEST_BODY_MAX).await
}

pub(crate) async fn report(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = ingest_body(&service, peer, &headers, body).await?;
    let outcome = blocking(move || {
        let mut operator = pooled(&service.operator, "operator")?;
        let result = operator.ingest(&[bytes.to_vec()], (service.operator_now)())?.into_iter().next();
        let outcome = match result.map(|r| r.outcome) {
            Some(Outcome::Stored) => "stored",
            Some(Outcome::Duplicate) => "duplicate",
            Some(Outcome::Equivocation) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "report-equivocation",
                    "another report for this license-hour is stored: both kept as evidence, this one not counted",
                ));
            }
            Some(Outcome::Refused(error)) => return Err(ApiError::from(error)),
            None => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "error", "the report got no outcome"));
            }
        };
        service.metrics.report(outcome);
        Ok(outcome)
    })
    .await?;
    Ok(axum::Json(serde_json::json!({ "ok": true, "outcome": outcome })).into_response())
}

#[derive(Serialize)]
pub(crate) struct CloseAnswer {
    ok: bool,
    license_id: String,
    package: String,
    tier: String,
    period: String,
    reports: u64,
    totals: std::collections::BTreeMap<String, u64>,
    again: bool,
}

pub(crate) async fn close(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = ingest_body(&service, peer, &headers, body).await?;
    let closed = blocking(move || {
        let now = (service.operator_now)();
        Ok(pooled(&service.operator, "operator")?.close(&bytes, now)?)
    })
    .await?;
    Ok(axum::Json(CloseAnswer {
        ok: true,
        license_id: closed.license_id,
        package: closed.package.to_string(),
        tier: closed.tier,
        period: closed.period,
        reports: closed.reports,
        totals: closed.totals.into_iter().collect(),
        again: closed.again,
    })
    .into_response())
}
