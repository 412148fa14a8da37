//! A plugin's name, and the one rule for it: what a file name, a URL path segment, a database
//! key and a metric label can all carry.

use std::fmt;

use super::ValidationError;

/// 1 to 64 characters of `a-z`, `0-9`, `-` and `_`. The OpenAPI document's pattern says the
/// same ([`PluginName::PATTERN`], checked by a test).
#[derive(Debug, Clone, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^[a-z0-9_-]{1,64}$", example = "stock")]
pub struct PluginName(String);

impl PluginName {
    /// The rule as a regular expression, as the OpenAPI document states it.
    pub const PATTERN: &str = r"^[a-z0-9_-]{1,64}$";

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(ValidationError(format!(
                "plugin names are 1 to 64 characters of a-z, 0-9, `-` and `_`, got `{raw}`"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
