//! Errors as the APIs send them: an HTTP status with OpenAI's error object
//! (`{"error": {"message", "type", "param", "code"}}`) or Anthropic's
//! (`{"type": "error", "error": {"type", "message"}}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's (`/v1/chat/completions`, `/v1/completions`, `/v1/models`).
    OpenAi,
    /// Anthropic's (`/v1/messages`).
    Anthropic,
}

/// An error for the client.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The parameter at fault, when one is.
    pub param: Option<String>,
    /// OpenAI's machine-readable code, when there is one (`context_length_exceeded`).
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming the parameter at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::invalid(message)
        }
    }

    /// 400: a parameter this server does not implement (refused, never ignored).
    pub fn unsupported(param: &str) -> Self {
        Self::invalid_param(
            param,
            format!("'{param}' is not supported by mlcli serve yet; leave it out"),
        )
    }

    /// 400: the prompt does not fit the context.
    pub fn context_length(prompt: usize, ctx: usize) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(format!(
                "the prompt is {prompt} tokens, and the server's context holds {ctx} \
                 (prompt and reply together); shorten it or start the server with a larger --ctx-size"
            ))
        }
    }

    /// 401: no key, or the wrong one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')",
        )
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no route {path}"))
    }

    /// 503: busy or stopping.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// An engine error: bad input (a template that refuses the conversation, say) is the
    /// client's, anything else the server's.
    pub fn from_engine(e: &crate::Error) -> Self {
        if matches!(e, crate::Error::ContextFull { .. }) {
            return Self {
                code: Some("context_length_exceeded"),
                ..Self::invalid(e.to_string())
            };
        }
        if e.is_bad_input() {
            Self::invalid(e.to_string())
        } else {
            Self::internal(e.to_string())
        }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The body in `dialect`'s shape.
    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": match self.kind() {
                    "authentication_error" => "invalid_request_error",
                    "overloaded_error" => "server_error",
                    "api_error" => "server_error",
                    k => k,
                },
                "param": self.param,
                "code": self.code,
            }}),
            Dialect::Anthropic => json!({"type": "error", "error": {
                "type": self.kind(),
                "message": self.message,
            }}),
        }
    }

    /// The response in `dialect`'s shape.
    pub fn respond(&self, dialect: Dialect) -> Response {
        (self.status, axum::Json(self.body(dialect))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_carry_the_message() {
        let e = ApiError::invalid_param("n", "only n = 1");
        let o = e.body(Dialect::OpenAi);
        assert_eq!(o["error"]["message"], "only n = 1");
        assert_eq!(o["error"]["param"], "n");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        let a = e.body(Dialect::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
        let c = ApiError::context_length(10, 8).body(Dialect::OpenAi);
        assert_eq!(c["error"]["code"], "context_length_exceeded");
    }
}
