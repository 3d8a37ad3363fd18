//! Errors the HTTP API answers with. Every client error names the field and the accepted range.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::compute::tryon::TryOnError;
use crate::executor::AdmitError;
use crate::gemm::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    TooLarge {
        field: &'static str,
        message: String,
    },
    #[error("{source}")]
    Overloaded {
        source: AdmitError,
        retry_after_secs: u64,
    },
    #[error("compute backend failed: {0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // Nobody reads it (the client left), but logs and metrics show what happened:
            // nginx's 499 "client closed request".
            Self::Backend(BackendError::Cancelled) => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::Backend(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn admit(source: AdmitError, retry_after_secs: u64) -> Self {
        match source {
            AdmitError::QueueFull { .. } => Self::Overloaded {
                source,
                retry_after_secs,
            },
            AdmitError::JobPanicked(m) => Self::Internal(format!("compute job failed: {m}")),
        }
    }
}

impl From<TryOnError> for ApiError {
    fn from(e: TryOnError) -> Self {
        match e {
            TryOnError::BadImage { field, message } => Self::BadRequest { field, message },
            TryOnError::ImageTooLarge { field, message } => Self::TooLarge { field, message },
            TryOnError::Backend(b) => Self::Backend(b),
            TryOnError::Encode(m) => Self::Internal(m),
        }
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, Self::Overloaded { .. }) {
            tracing::error!(error = %self, "request failed");
        }
        let field = match &self {
            Self::BadRequest { field, .. } | Self::TooLarge { field, .. } => Some(*field),
            _ => None,
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                field,
            }),
        )
            .into_response();
        if let Self::Overloaded {
            retry_after_secs, ..
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}
