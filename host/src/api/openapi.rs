//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Every router is a `utoipa_axum` `OpenApiRouter`, and every route is added with
//! `routes!`, which registers a handler together with its `#[utoipa::path]`: a route is
//! served only with its description. A handler's annotation says what the handler
//! answers; [`finish`] adds what the layers around it answer, from the tables those
//! layers use: the role [`required_role`] names (with 401 and 403), the limits' 503 and
//! the 500 any use case may give on `/v1/`, and `X-Correlation-Id` everywhere.

use super::AppState;
use super::auth::{Keys, required_role};
use super::problem::{CONTENT_TYPE, Problem, ProblemBody};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{IntoParams, PartialSchema, ToResponse, ToSchema};

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Switchyard"),
    components(schemas(ProblemBody), responses(Problem)),
    tags(
        (name = "definitions", description = "Deploying modules, and their versions' lifecycle"),
        (name = "instances", description = "Starting instances, their actions, events and history"),
        (name = "admin", description = "Migrations and audited overrides"),
        (name = "tasks", description = "Participants' late reports"),
        (name = "feed", description = "Every committed transition, in commit order"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
struct Base;

/// The document's title, version, components and tags, before any route.
pub(super) fn base() -> OpenApi {
    <Base as utoipa::OpenApi>::openapi()
}

/// Adds to every operation of `document` what the layers around its handler answer;
/// the document as JSON.
pub(super) fn finish(mut document: OpenApi, keys: &Keys) -> Bytes {
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some("An API key: `Authorization: Bearer <key>`. A server without keys is open."))
        .build();
    document.components.get_or_insert_default().add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    for (path, item) in &mut document.paths.paths {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                add_layers(operation, &method, path, keys);
            }
        }
    }
    // Plain data, with string keys only: it always serialises.
    serde_json::to_vec(&document).expect("the OpenAPI document serialises").into()
}

fn add_layers(operation: &mut Operation, method: &Method, path: &str, keys: &Keys) {
    let correlation = string_header(
        "X-Correlation-Id",
        Required::False,
        "Echoed on the response and in problems; a new one is made when absent or not 1 to 128 \
         visible ASCII characters.",
    );
    operation.parameters.get_or_insert_default().push(correlation);
    let mut problems = Vec::new();
    if let Some(role) = required_role(method, path, keys) {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        let needs = format!("Needs the role `{}` or above.", role.as_str());
        operation.description = Some(match operation.description.take() {
            Some(text) => format!("{text}\n\n{needs}"),
            None => needs,
        });
        problems.extend(["401", "403"]);
    }
    if path.starts_with("/v1/") {
        // The server's own failure, and the limits' `overloaded` and `timeout`.
        problems.extend(["500", "503"]);
    }
    for status in problems {
        let problem = RefOr::Ref(Ref::from_response_name(<Problem as ToResponse>::response().0));
        operation.responses.responses.entry(status.to_owned()).or_insert(problem);
    }
}

/// Serves this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(super) async fn serve(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi).into_response()
}

/// Every error: an RFC 9457 problem.
impl<'r> ToResponse<'r> for Problem {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ProblemBody::name()))).build();
        let correlation = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some("The request's correlation id, as in the body"))
            .build();
        let response = ResponseBuilder::new()
            .description("A problem (RFC 9457); its `type` names it")
            .content(CONTENT_TYPE, content)
            .header("X-Correlation-Id", correlation)
            .build();
        ("Problem", RefOr::T(response))
    }
}

/// A module's bytes: a core Wasm module.
pub(super) enum WasmModule {}

impl PartialSchema for WasmModule {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for WasmModule {}

/// `Idempotency-Key`, optional.
pub(super) enum KeyHeader {}

/// `Idempotency-Key`, required: instance creation and actions.
pub(super) enum RequiredKeyHeader {}

/// `If-Match` of an action.
pub(super) enum IfMatchHeader {}

/// `If-None-Match` and `Prefer: wait=N` of an instance's read.
pub(super) enum LongPollHeaders {}

/// `Last-Event-ID` of a reconnecting feed stream.
pub(super) enum LastEventIdHeader {}

impl IntoParams for KeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![key_header(Required::False)]
    }
}

impl IntoParams for RequiredKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![key_header(Required::True)]
    }
}

impl IntoParams for IfMatchHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let description =
            "`*` or the instance's ETag: the action runs only on that revision (412 otherwise).";
        vec![string_header("If-Match", Required::False, description)]
    }
}

impl IntoParams for LongPollHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            string_header(
                "If-None-Match",
                Required::False,
                "ETags (or `*`): 304 when one is the current revision's.",
            ),
            string_header(
                "Prefer",
                Required::False,
                "`wait=N` (RFC 7240): wait up to N seconds (capped by the server) for a change away from \
                 the `If-None-Match` ETag, or from the revision current on arrival.",
            ),
        ]
    }
}

impl IntoParams for LastEventIdHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let description =
            "With `Accept: text/event-stream`: the `id` of the last event received; wins over `after`.";
        vec![string_header("Last-Event-ID", Required::False, description)]
    }
}

fn key_header(required: Required) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(255))
        .pattern(Some("^[!-~]+$"));
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(required)
        .description(Some(
            "1 to 255 visible ASCII characters. The first request under a key runs; a repeat with the \
             same body gets its response again (`Idempotent-Replayed: true`), with another body 422, \
             while the first still runs 409.",
        ))
        .schema(Some(schema))
        .build()
}

fn string_header(name: &str, required: Required, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(required)
        .description(Some(description))
        .schema(Some(String::schema()))
        .build()
}
