//! The gateway's own answer to a request it does not forward, on any HTTP listener:
//! the status, flag and details its error means, and a line of text saying why.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::Response;

use super::http_body::ResponseBody;
use crate::audit::Recorder;
use crate::error::EgressError;

/// The gateway's own answer to a request it does not forward: one line of text.
pub(super) fn local_reply(error: EgressError, mut recorder: Recorder) -> Response<ResponseBody> {
    let status = error.status();
    recorder.note_failure(&error);
    let record = recorder.record();
    record.response_code = status.as_u16();
    record.response_code_details = Some(error.details());
    let close = matches!(error, EgressError::BadRequest { .. });
    let mut response = Response::new(ResponseBody::local(
        Bytes::from(format!("{error}\n")),
        recorder,
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(seconds) = error.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if close {
        // After a request we refuse to parse, the rest of the stream cannot be trusted.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
