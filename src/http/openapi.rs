//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{auth, calls, organization, system, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Voice by Kraliki API", description = "Self-hosted call-center backend."),
    paths(
        system::health, system::ready, system::jwks, system::openapi, system::index,
        auth::register, auth::login, auth::create_session, auth::refresh, auth::logout,
        auth::logout_all, auth::me, auth::forgot_password, auth::reset_password,
        auth::change_password, auth::totp_enrol, auth::totp_verify, auth::totp_disable,
        users::list_users, users::get_user, users::create_user, users::update_user,
        calls::list_calls, calls::get_call,
        organization::get_organization, organization::set_security_policy,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&SecuritySchemes),
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
    }
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
