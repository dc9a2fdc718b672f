//! Where storage errors become HTTP replies: one table per operation, because weed
//! answers the same condition differently on reads, writes and deletes (a wrong
//! cookie is 404 on GET, 400 on DELETE, 500 on a write).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::json_response;
use volume_store::error::Error;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug)]
enum ErrorBody {
    Empty,
    /// `{"error":"…"}`
    Json(String),
    /// Any other JSON document, e.g. `{"size":0}`.
    Raw(String),
    /// A plain-text message (bad fid on reads).
    Text(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, body: ErrorBody::Json(message.into()) }
    }

    pub fn json(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::Json(message.into()) }
    }

    pub fn raw_json(status: StatusCode, json: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::Raw(json.into()) }
    }

    pub fn text(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::Text(message.into()) }
    }

    /// A request the JWT check refused: weed's 401 on reads, writes and deletes alike.
    pub fn wrong_jwt() -> Self {
        Self::json(StatusCode::UNAUTHORIZED, "wrong jwt")
    }

    pub fn empty(status: StatusCode) -> Self {
        Self { status, body: ErrorBody::Empty }
    }

    /// GET/HEAD: missing, deleted, expired or wrong cookie are all an empty 404;
    /// a corrupt record or an I/O error is an empty 500, with the cause logged.
    pub fn for_read(e: Error) -> Self {
        match e {
            Error::VolumeNotFound(_)
            | Error::NeedleNotFound(_)
            | Error::AlreadyDeleted(_)
            | Error::CookieMismatch { .. } => Self::empty(StatusCode::NOT_FOUND),
            e => {
                tracing::error!(error = %e, "read failed");
                Self::empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// POST/PUT: everything the store refuses is a 500 with weed's wording.
    pub fn for_write(e: Error) -> Self {
        match e {
            Error::VolumeNotFound(_) => Self::json(StatusCode::NOT_FOUND, e.to_string()),
            e @ (Error::WriteCookieMismatch { .. } | Error::ReadOnly(_) | Error::VolumeFull { .. }) => {
                Self::json(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to write to local disk: {e}"))
            }
            e => {
                tracing::error!(error = %e, "write failed");
                Self::json(StatusCode::INTERNAL_SERVER_ERROR, format!("failed to write to local disk: {e}"))
            }
        }
    }

    /// DELETE: missing is 404 `{"size":0}`, a wrong cookie 400, a failure 500.
    pub fn for_delete(e: Error) -> Self {
        match e {
            Error::VolumeNotFound(_) | Error::NeedleNotFound(_) | Error::AlreadyDeleted(_) => {
                Self::raw_json(StatusCode::NOT_FOUND, r#"{"size":0}"#)
            }
            Error::CookieMismatch { .. } => {
                Self::json(StatusCode::BAD_REQUEST, "File Random Cookie does not match.")
            }
            e => {
                tracing::error!(error = %e, "delete failed");
                Self::json(StatusCode::INTERNAL_SERVER_ERROR, format!("Deletion Failed: {e}"))
            }
        }
    }

    pub fn into_response(self) -> Response {
        match self.body {
            ErrorBody::Empty => Response::builder()
                .status(self.status)
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .expect("static headers are valid"),
            ErrorBody::Json(message) => {
                let json = serde_json::json!({ "error": message }).to_string();
                json_response(self.status, super::upload::go_json(&json))
            }
            ErrorBody::Raw(json) => json_response(self.status, json),
            ErrorBody::Text(message) => Response::builder()
                .status(self.status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header("x-content-type-options", "nosniff")
                .header(header::CONTENT_LENGTH, message.len())
                .body(Body::from(message))
                .expect("static headers are valid"),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ApiError::into_response(self)
    }
}
