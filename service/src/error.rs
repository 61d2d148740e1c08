//! Error answers with stable codes and statuses (service.md §5).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use escx::{ErrorClass, Fault};

/// An error answer: `{"ok": false, "error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into(), retry_after: None }
    }

    pub fn retry(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A library error, by its class and code (service.md §1): a message that does not
    /// decode is 400, `token-spent` 409, any other refusal 422, a store failure 503.
    pub fn from_fault(fault: &dyn Fault, message: String) -> Self {
        let code = fault.code();
        let status = match (fault.class(), code) {
            (ErrorClass::Environment, _) => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry(1);
            }
            (_, "token-spent") => StatusCode::CONFLICT,
            (_, "unknown-statement") => StatusCode::NOT_FOUND,
            (
                _,
                "message-invalid" | "report-invalid" | "envelope-invalid" | "sealed-box-invalid"
                | "key-length",
            ) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, code, message)
    }
}

impl<E: Fault + std::fmt::Display> From<E> for ApiError {
    fn from(error: E) -> Self {
        let message = error.to_string();
        Self::from_fault(&error, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "ok": false, "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .extensions_mut()
            .insert(super::log::ErrorNote { code: self.code.clone(), message: self.message.clone() });
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
