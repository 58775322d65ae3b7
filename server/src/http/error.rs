//! The one place where errors become HTTP responses.
//!
//! Every failure a handler can meet is an [`ApiError`]; `IntoResponse` maps
//! it to a status and OpenAI's body, `{"error": {"message", "type", "param",
//! "code"}}`. Client mistakes are 4xx and name the parameter; 5xx is kept for
//! faults of the server itself.

use crate::engine::EngineError;
use crate::lora::LoraError;
use crate::sampler::SamplingError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400: malformed or out-of-range input.
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// 401: missing or wrong API key.
    Unauthorized,
    /// 404: unknown model, adapter, collection or route.
    NotFound {
        message: String,
        param: Option<String>,
    },
    /// 405: a known route with the wrong method.
    MethodNotAllowed,
    /// 413: body over the size limit.
    PayloadTooLarge { limit: usize },
    /// 429: the queue is full.
    QueueFull { waiting: usize },
    /// 429: over the request rate limit; retry after this many seconds.
    RateLimited { retry_after_s: u64 },
    /// 503: the engine is shutting down.
    Unavailable,
    /// 503: every resident LoRA adapter is busy.
    AdaptersBusy(String),
    /// 500: a fault of the server.
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: param.into().map(String::from),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::AdaptersBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> ErrorBody {
        let (message, kind, param, code) = match self {
            Self::BadRequest { message, param } => (
                message.clone(),
                "invalid_request_error",
                param.clone(),
                None,
            ),
            Self::Unauthorized => (
                "missing or incorrect API key; send `Authorization: Bearer <key>`".into(),
                "authentication_error",
                None,
                Some("invalid_api_key"),
            ),
            Self::NotFound { message, param } => (
                message.clone(),
                "not_found_error",
                param.clone(),
                Some(match param.as_deref() {
                    Some("model" | "lora_name") => "model_not_found",
                    Some("collection") => "collection_not_found",
                    _ => "not_found",
                }),
            ),
            Self::MethodNotAllowed => (
                "method not allowed on this route (the /v1 generation routes take POST; /health, /v1/models and /metrics take GET)".into(),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            Self::PayloadTooLarge { limit } => (
                format!("request body is larger than the limit of {limit} bytes"),
                "invalid_request_error",
                None,
                Some("payload_too_large"),
            ),
            Self::QueueFull { waiting } => (
                format!("the server is at capacity ({waiting} requests waiting); retry later"),
                "rate_limit_error",
                None,
                Some("queue_full"),
            ),
            Self::RateLimited { retry_after_s } => (
                format!("over the request rate limit; retry after {retry_after_s} s"),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            Self::Unavailable => (
                "the server is shutting down".into(),
                "server_error",
                None,
                None,
            ),
            Self::AdaptersBusy(m) => (m.clone(), "server_error", None, Some("adapters_busy")),
            Self::Internal(m) => (m.clone(), "server_error", None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                r#type: kind,
                param,
                code,
            },
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    message: String,
    r#type: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        let retry_after = match self {
            Self::QueueFull { .. } | Self::AdaptersBusy(_) => Some(1),
            Self::RateLimited { retry_after_s } => Some(retry_after_s),
            _ => None,
        };
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        let SamplingError::InvalidParameter { param, .. } = &e;
        Self::BadRequest {
            message: e.to_string(),
            param: Some((*param).to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidParams(p) => p.into(),
            // The scheduler rejects requests that can never run: too long for
            // the context or for the whole KV cache.
            EngineError::Rejected(message) => Self::BadRequest {
                message,
                param: Some("max_tokens".into()),
            },
            EngineError::Shutdown => Self::Unavailable,
        }
    }
}

impl From<LoraError> for ApiError {
    fn from(e: LoraError) -> Self {
        match e {
            LoraError::NotFound(message) => Self::NotFound {
                message,
                param: Some("lora_name".into()),
            },
            LoraError::Invalid(message) => Self::BadRequest {
                message,
                param: None,
            },
            LoraError::Busy(message) => Self::AdaptersBusy(message),
        }
    }
}
