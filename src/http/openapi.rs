//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' own annotations
//! (utoipa), so it cannot drift from the code; served at `/api/v1/openapi.json`, and rendered by
//! `/docs` with no resource from the internet.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use super::api;

/// The document's frame: title, version, the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pagepulse API",
        description = "Writes go to the pipelines' input topics and answer 202 once the broker acknowledged them; \
                       reads come from the pipelines' live state. Errors are application/problem+json (RFC 9457).",
        license(name = "Apache-2.0")
    ),
    components(schemas(api::Accepted)),
    modifiers(&Bearer)
)]
struct Frame;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("opaque token").build(),
            ),
        );
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Frame::openapi();
    doc.merge(api::pages::Doc::openapi());
    doc.merge(api::posts::Doc::openapi());
    doc.merge(api::pageviews::Doc::openapi());
    doc.merge(api::messages::Doc::openapi());
    doc.merge(api::apps::Doc::openapi());
    doc
}

/// The document as JSON.
pub fn json() -> String {
    document().to_pretty_json().expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let v: serde_json::Value = serde_json::from_str(&super::json()).expect("JSON");
        assert!(v["openapi"].as_str().is_some_and(|s| s.starts_with("3.1")), "{}", v["openapi"]);
        for path in ["/api/v1/pages", "/api/v1/pages/{key}", "/api/v1/posts", "/api/v1/pageviews/blacklist"] {
            assert!(v["paths"][path].is_object(), "{path} is documented");
        }
        assert_eq!(v["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
