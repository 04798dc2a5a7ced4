//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{assets, audit, auth, calls, metrics, organization, security, system, users, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Voice by Kraliki API", description = "Self-hosted call-center backend."),
    paths(
        system::health, system::ready, system::jwks, system::openapi, system::index,
        metrics::metrics,
        assets::asset, assets::favicon,
        auth::register, auth::login, auth::create_session, auth::refresh, auth::logout,
        auth::logout_all, auth::me, auth::forgot_password, auth::reset_password,
        auth::change_password, auth::totp_enrol, auth::totp_verify, auth::totp_disable,
        users::list_users, users::get_user, users::create_user, users::update_user,
        calls::list_calls, calls::get_call,
        organization::get_organization, organization::set_security_policy,
        audit::list_audit, security::list_events, security::stream_events,
        ws::create_ticket, ws::connect,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&SecuritySchemes, &ProblemMediaType),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-kraliki_session",
                "Browser session; state-changing requests also need X-CSRF-Token",
            ))),
        );
        components.add_security_scheme(
            "ws_ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "Single-use WebSocket ticket from POST /api/ws/ticket (30 s)",
            ))),
        );
    }
}

/// Error bodies are sent as `application/problem+json` (RFC 9457); the
/// annotations' `body = Problem` defaults to `application/json`, so move
/// every response whose schema is `Problem` to the media type actually sent.
struct ProblemMediaType;

impl Modify for ProblemMediaType {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response
                        .content
                        .get("application/json")
                        .and_then(|c| c.schema.as_ref())
                        .is_some_and(|s| {
                            matches!(s, RefOr::Ref(r) if r.ref_location == "#/components/schemas/Problem")
                        });
                    if is_problem {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response
                                .content
                                .insert(crate::error::PROBLEM_JSON.to_string(), content);
                        }
                    }
                }
            }
        }
    }
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
