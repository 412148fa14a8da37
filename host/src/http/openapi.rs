//! The HTTP API's description (OpenAPI 3.1), generated from the handlers' annotations and the
//! router itself, served at `/openapi.json` and browsable at `/api` (offline, no CDN).

use axum::response::Html;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};

use super::error::ErrorBody;
use crate::domain::{FORMAT_CHARS, MAX_ID_LEN, PluginName};

/// The scheme admin operations require.
const ADMIN_SCHEME: &str = "adminToken";

/// An identifier (user, product): 1 to 255 bytes of UTF-8, not blank, with no control
/// characters and no invisible format characters (zero-width space, bidirectional overrides…).
/// A schema only: handlers take strings and check them with `domain::parse_*`.
pub struct Identifier;

impl utoipa::PartialSchema for Identifier {
    fn schema() -> RefOr<Schema> {
        text_schema(
            "1 to 255 bytes of UTF-8, not blank, with no control characters and no invisible \
             format characters (Unicode Cf: zero-width space, bidirectional overrides…)",
            &[CONTROL_CHARS, FORMAT_CHARS],
            "CATALOG-0001",
        )
    }
}

impl utoipa::ToSchema for Identifier {}

/// A display name: 1 to 255 bytes, not blank, no control characters.
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        text_schema(
            "1 to 255 bytes of UTF-8, not blank, with no control characters",
            &[CONTROL_CHARS],
            "Fountain pen",
        )
    }
}

impl utoipa::ToSchema for Name {}

/// Unicode general category Cc, what `char::is_control` finds.
const CONTROL_CHARS: &[(u32, u32)] = &[(0x00, 0x1F), (0x7F, 0x9F)];

/// Unicode `White_Space`, what `str::trim` removes.
const WHITE_SPACE: &[(u32, u32)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// A string schema whose pattern says what the handlers' checks say: none of the `excluded`
/// characters anywhere, and at least one that is not white space (so not blank). `\uXXXX` and
/// `\UXXXXXXXX` escapes, which the Python and Rust regex engines of OpenAPI tools read.
fn text_schema(description: &str, excluded: &[&[(u32, u32)]], example: &str) -> RefOr<Schema> {
    let class = |sets: &[&[(u32, u32)]]| {
        let mut class = String::new();
        for &(low, high) in sets.iter().flat_map(|set| set.iter()) {
            class.push_str(&escape(low));
            if high != low {
                class.push('-');
                class.push_str(&escape(high));
            }
        }
        class
    };
    let allowed = class(excluded);
    let mut with_space = excluded.to_vec();
    with_space.push(WHITE_SPACE);
    let visible = class(&with_space);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .pattern(Some(format!("^[^{allowed}]*[^{visible}][^{allowed}]*$")))
        .examples([example])
        .into()
}

fn escape(c: u32) -> String {
    if c <= 0xFFFF {
        format!("\\u{c:04x}")
    } else {
        format!("\\U{c:08x}")
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Orders in, stock out: `POST /orders` writes an order and its Kafka event; \
            a sandboxed WebAssembly plugin decides each event and the catalog follows. \
            Admin operations (plugins, catalog upserts, dead letters) need \
            `Authorization: Bearer <SLUICE_ADMIN_TOKEN>`, or a loopback client where the \
            server was started that way (`sluice dev`, `--admin-open-on-loopback`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "orders", description = "Place orders and follow them"),
        (name = "catalog", description = "Products and their stock"),
        (name = "plugins", description = "Install, compare, promote and roll back handler plugins, fleet-wide"),
        (name = "dead letters", description = "Records no plugin could handle: inspect and redrive"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    components(schemas(ErrorBody, Identifier, Name, PluginName))
)]
struct ApiDoc;

/// The document the router's operations are collected into.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(
        "`SLUICE_ADMIN_TOKEN`. Not needed from loopback where the server allows it \
         (`sluice dev`, `sluice serve --admin-open-on-loopback`)."
            .into(),
    );
    components.add_security_scheme(ADMIN_SCHEME, SecurityScheme::Http(scheme));
    doc
}

/// Marks every operation of `doc` as admin-only: the bearer scheme, and its `401`.
pub fn require_admin(doc: &mut utoipa::openapi::OpenApi) {
    for operation in operations(doc) {
        operation.security = Some(vec![SecurityRequirement::new::<_, [&str; 0], &str>(
            ADMIN_SCHEME,
            [],
        )]);
        add_response(
            operation,
            "401",
            "No or a wrong admin token (or, with loopback access, a client not on loopback)",
        );
    }
}

/// What every operation may answer besides its own responses: the database is unreachable.
pub fn add_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    for operation in operations(doc) {
        add_response(
            operation,
            "503",
            "Unavailable: the database does not answer (or, for `/readyz`, ingest is stuck); retry later",
        );
    }
}

fn add_response(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            Response::builder()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
                .into()
        });
}

fn operations(doc: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths
        .paths
        .values_mut()
        .flat_map(|item: &mut PathItem| {
            [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .filter_map(Option::as_mut)
        })
}

/// `GET /api`: a page that renders `/openapi.json` and can try the operations.
pub async fn browser() -> Html<&'static str> {
    Html(include_str!("../../web/api.html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MAX_QUANTITY, MAX_UNIT_PRICE};
    use utoipa::PartialSchema;

    /// One licence everywhere: the document's is the crate's, and the LICENSE file is its text.
    #[test]
    fn the_document_states_the_licence_of_the_code() {
        let doc = base();
        let license = doc.info.license.expect("a licence");
        assert_eq!(license.name, env!("CARGO_PKG_LICENSE"));
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../LICENSE"));
        assert!(text.trim_start().starts_with("Apache License"), "LICENSE");
        assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    }

    /// The bounds the document states are the ones the handlers enforce.
    #[test]
    fn stated_bounds_are_the_enforced_ones() {
        let json = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(schema).unwrap()
        };
        let order = json(super::super::orders::CreateOrder::schema());
        assert_eq!(
            order["properties"]["quantity"]["maximum"],
            serde_json::json!(MAX_QUANTITY)
        );
        assert_eq!(
            order["properties"]["unitPrice"]["maximum"],
            serde_json::json!(MAX_UNIT_PRICE)
        );
        let id = json(Identifier::schema());
        assert_eq!(id["maxLength"], serde_json::json!(MAX_ID_LEN));
    }

    /// The character sets the patterns are made of are exactly the ones the checks use.
    #[test]
    fn pattern_sets_match_the_standard_library() {
        let within = |set: &[(u32, u32)], c: u32| set.iter().any(|&(l, h)| (l..=h).contains(&c));
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(c.is_control(), within(CONTROL_CHARS, c.into()), "{c:?}");
            assert_eq!(c.is_whitespace(), within(WHITE_SPACE, c.into()), "{c:?}");
        }
    }

    /// The plugin-name pattern of the document is the rule `PluginName::parse` applies, on
    /// every one-byte name and at both length bounds.
    #[test]
    fn the_plugin_name_pattern_is_the_rule_the_api_applies() {
        let schema = serde_json::to_value(PluginName::schema()).unwrap();
        assert_eq!(schema["pattern"], PluginName::PATTERN);
        let pattern = regex::Regex::new(PluginName::PATTERN).unwrap();
        let mut names: Vec<String> = (0u8..=127).map(|b| char::from(b).to_string()).collect();
        names.extend(["", "é", "stock-v2_b", "Stock", "a b"].map(String::from));
        names.extend([63, 64, 65].map(|n| "a".repeat(n)));
        for name in names {
            assert_eq!(
                pattern.is_match(&name),
                PluginName::parse(&name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_identifier_pattern_escapes_every_range() {
        let id = serde_json::to_value(Identifier::schema()).unwrap();
        let pattern = id["pattern"].as_str().unwrap();
        assert!(
            pattern.starts_with("^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad"),
            "{pattern}"
        );
        assert!(pattern.contains("\\U000e0020-\\U000e007f"), "{pattern}");
        assert!(
            pattern.contains("\\u3000]["),
            "white space is in the middle class: {pattern}"
        );
    }
}
