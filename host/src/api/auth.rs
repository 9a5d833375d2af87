//! API keys and roles (SPEC §6): who calls, and whether their role may use the route.
//!
//! A key arrives as `Authorization: Bearer <key>` and is known by its SHA-256 only. The
//! role each route needs is one table, [`required_role`], read after routing; a route
//! missing from it needs admin, so a new route is closed until it is listed. The
//! service checks roles again where the decision depends on more than the route
//! (admin-only actions) or where it guards admin operations.

use super::problem::Problem;
use crate::model::{ApiKey, Caller, Role};
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use std::collections::HashMap;

/// The configured keys; with none, the server is open.
#[derive(Debug, Clone)]
pub struct Keys {
    by_hash: HashMap<[u8; 32], Caller>,
    open_metrics: bool,
}

impl Keys {
    pub fn new(keys: &[ApiKey], open_metrics: bool) -> Keys {
        let by_hash =
            keys.iter().map(|key| (key.sha256, Caller { name: key.name.clone(), role: key.role })).collect();
        Keys { by_hash, open_metrics }
    }

    fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The caller presenting `authorization`, or why there is none.
    fn caller(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Problem> {
        if self.is_open() {
            return Ok(Caller::anonymous());
        }
        let Some(authorization) = authorization else {
            return Err(unauthorized("this endpoint needs an API key: Authorization: Bearer <key>"));
        };
        let key = authorization
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <key>"))?;
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&digest).cloned().ok_or_else(|| unauthorized("the API key is not known"))
    }
}

/// The role a route needs, by method and route pattern; `None`: open to anyone.
pub fn required_role(method: &Method, route: &str, keys: &Keys) -> Option<Role> {
    let reading = *method == Method::GET || *method == Method::HEAD;
    match (reading, route) {
        (_, "/healthz" | "/readyz" | "/openapi.json") => None,
        (_, "/metrics") => (!keys.open_metrics).then_some(Role::Client),
        (
            true,
            "/v1/definitions" | "/v1/definitions/{name}" | "/v1/definitions/{name}/versions/{version}",
        ) => Some(Role::Client),
        (false, "/v1/definitions") => Some(Role::Deployer),
        (
            _,
            "/v1/definitions/{name}/instances"
            | "/v1/instances"
            | "/v1/instances/{id}"
            | "/v1/instances/{id}/actions/{action}"
            | "/v1/instances/{id}/history"
            | "/v1/instances/{id}/events"
            | "/v1/tasks/{task_id}/result"
            | "/v1/feed",
        ) => Some(Role::Client),
        _ => Some(Role::Admin),
    }
}

/// Authenticates the caller, checks the route's role and hands the [`Caller`] on in
/// the request's extensions. Runs after routing (a route layer), so an unknown path is
/// still a 404.
pub async fn middleware(
    axum::extract::State(keys): axum::extract::State<std::sync::Arc<Keys>>,
    route: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    let Some(required) = required_role(request.method(), route, &keys) else {
        return next.run(request).await;
    };
    let caller = match keys.caller(request.headers().get(header::AUTHORIZATION)) {
        Ok(caller) => caller,
        Err(problem) => {
            let mut response = problem.into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if let Err(forbidden) = caller.require(required) {
        return super::Problem::from(crate::service::Error::Forbidden(forbidden)).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
}

/// The caller the auth middleware let through.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| Problem::internal("no caller on the request"))
    }
}

#[cfg(test)]
mod tests;
