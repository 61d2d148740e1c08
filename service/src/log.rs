//! The service's log on stderr (service.md §7): a start and a stop line, one line per
//! request, and every server-side failure with its code. Never a client address, a
//! request body, a token or a header.

use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode};

/// Header carrying the id a request's log line names (answered on every response).
pub const REQUEST_ID: &str = "x-request-id";

/// How `escx serve` logs (`--log-format`, `--quiet`). The default logs nothing: the
/// demo and tests run the service in process.
#[derive(Clone, Copy, Default)]
pub struct Log {
    /// Whether anything is logged.
    pub on: bool,
    /// One line per request (off with `--quiet`: failures, start and stop only).
    pub requests: bool,
    /// JSON objects, one per line, instead of text.
    pub json: bool,
}

/// What an error response carries for the log: its code and message.
#[derive(Clone)]
pub struct ErrorNote {
    pub code: String,
    pub message: String,
}

impl Log {
    /// The service started, listening on `url`.
    pub fn start(self, url: &str) {
        if self.on && self.requests {
            self.write("start", &[("listening", url.into())], None);
        }
    }

    /// The service stopped after answering `requests` requests.
    pub fn stop(self, requests: u64) {
        if self.on && self.requests {
            self.write("stop", &[("requests", requests.into())], None);
        }
    }

    /// One request: its method, route (the endpoint, never the raw path), status,
    /// duration and id; a failure on the server's side (5xx) is logged even when quiet.
    pub fn request(
        self,
        method: &Method,
        route: &str,
        status: StatusCode,
        took: Duration,
        id: &str,
        error: Option<&ErrorNote>,
    ) {
        if !self.logs(status) {
            return;
        }
        let millis = (took.as_secs_f64() * 1e4).round() / 10.0;
        let fields = [
            ("method", method.as_str().into()),
            ("route", route.into()),
            ("status", status.as_u16().into()),
            ("ms", millis.into()),
            ("request_id", id.into()),
        ];
        self.write("request", &fields, error);
    }

    /// Whether a request answered with `status` is logged: every one, or with `--quiet`
    /// only failures on the service's side.
    fn logs(self, status: StatusCode) -> bool {
        self.on && (self.requests || status.is_server_error())
    }

    fn write(self, event: &str, fields: &[(&str, serde_json::Value)], error: Option<&ErrorNote>) {
        let time = escx::timestamp::format_rfc3339(escx::now_unix());
        let line = if self.json {
            let mut object = serde_json::Map::new();
            object.insert("time".into(), time.into());
            object.insert("event".into(), event.into());
            for (key, value) in fields {
                object.insert((*key).into(), value.clone());
            }
            if let Some(error) = error {
                object.insert("code".into(), error.code.clone().into());
                object.insert("message".into(), error.message.clone().into());
            }
            serde_json::Value::Object(object).to_string()
        } else {
            let mut line = format!("{time} {event}");
            for (key, value) in fields {
                match value {
                    serde_json::Value::String(text) => line += &format!(" {key}={text}"),
                    other => line += &format!(" {key}={other}"),
                }
            }
            if let Some(error) = error {
                line += &format!(" code={} message={:?}", error.code, error.message);
            }
            line
        };
        eprintln!("{line}");
    }
}

/// A fresh request id: 8 random bytes, hex.
pub fn request_id() -> (String, HeaderValue) {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let id = hex::encode(bytes);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"));
    (id, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_keeps_only_failures_of_the_service() {
        let quiet = Log { on: true, requests: false, json: false };
        assert!(quiet.logs(StatusCode::SERVICE_UNAVAILABLE) && quiet.logs(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!quiet.logs(StatusCode::OK) && !quiet.logs(StatusCode::NOT_FOUND));
        let full = Log { requests: true, ..quiet };
        assert!(full.logs(StatusCode::OK) && full.logs(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!Log::default().logs(StatusCode::SERVICE_UNAVAILABLE), "the in-process service logs nothing");
    }
}
