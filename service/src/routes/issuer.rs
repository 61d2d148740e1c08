//! The issuer's routes (service.md §2): its bundle chain, purchase, redemption, content
//! keys, CRL.

use crate::*;

/// Body limits per endpoint (service.md §4).
pub(crate) const PURCHASE_BODY_MAX: usize = 256 * 1024;

pub(crate) const REDEEM_BODY_MAX: usize = 64 * 1024;

/// A key request carries a whole certificate, whose wrapped keys grow with the files
/// registered before it was issued (about 1.6 KiB each).
pub(crate) const KEY_REQUEST_BODY_MAX: usize = 256 * 1024;

pub(crate) async fn issuer_chain(
    State(service): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let chain = blocking(move || Ok(issuer(&service)?.published()?)).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-published", "the issuer has published no bundle yet")
    })?;
    Ok(tagged(&headers, chain.to_cbor(), "application/cbor", Some("public, max-age=300")))
}

/// The account a purchase's bearer token names (service.md §3).
pub(crate) fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a purchase needs Authorization: Bearer <account token>",
        )
    };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
    let token = value.strip_prefix("Bearer ").ok_or_else(unauthorized)?.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unauthorized());
    }
    Ok(token.to_ascii_lowercase())
}

pub(crate) async fn purchase(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let checking = service.clone();
    let account = blocking(move || {
        issuer(&checking)?.account(&token)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the account token is not known to this issuer",
            )
        })
    })
    .await?;
    let bytes = read_body(body, PURCHASE_BODY_MAX).await?;
    let answer = blocking(move || {
        let request = TokenRequest::from_cbor(&bytes)?;
        let issuer = issuer(&service)?;
        let answer = issuer.issue_for(&request, Some(&account), (service.issuer_now)())?.to_cbor();
        service.metrics.purchase();
        Ok(answer)
    })
    .await?;
    Ok(cbor(answer))
}

pub(crate) async fn redeem(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    service.redeem_limit.check(client_address(peer.ip(), &headers, &service.trusted_proxies))?;
    let bytes = read_body(body, REDEEM_BODY_MAX).await?;
    let answer = blocking(move || {
        let sealed = SealedRedeemRequest::from_bytes(bytes.to_vec());
        let license = issuer(&service)?.redeem(&sealed, (service.issuer_now)())?;
        service.metrics.redemption();
        Ok(license.as_bytes().to_vec())
    })
    .await?;
    Ok(cbor(answer))
}

/// A holder's request for a later file's content key (licensing.md §8.1): rate-limited
/// like redemptions, answered with the key wrapped to the license; nothing is recorded.
pub(crate) async fn content_key(
    State(service): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    service.redeem_limit.check(client_address(peer.ip(), &headers, &service.trusted_proxies))?;
    let bytes = read_body(body, KEY_REQUEST_BODY_MAX).await?;
    let answer =
        blocking(move || Ok(issuer(&service)?.content_key_for(&bytes, (service.issuer_now)())?)).await?;
    Ok(cbor(answer))
}

pub(crate) async fn crl(State(service): State<Shared>) -> Result<Response, ApiError> {
    let crl = blocking(move || {
        Ok(issuer(&service)?.current_crl(escx_licensing::issuer::CRL_REFRESH_SECS, (service.issuer_now)())?)
    })
    .await?;
    Ok(cbor(crl))
}
