//! Validation shared by resources and accounts: custom columns and optional text fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::error::FieldProblem;

/// Most custom columns one resource or account may carry.
pub const MAX_CUSTOM_FIELDS: usize = 50;

/// Checks custom columns: names 1–64 characters, not one of `reserved` (the built-in property
/// keys, compared case-insensitively), values at most 1024 characters.
pub fn check_custom_fields(
    fields: &BTreeMap<String, String>,
    reserved: &[&str],
    problems: &mut Vec<FieldProblem>,
) {
    if fields.len() > MAX_CUSTOM_FIELDS {
        problems.push(FieldProblem::new(
            "custom_fields",
            format!("at most {MAX_CUSTOM_FIELDS} custom fields are allowed"),
        ));
    }
    for (k, v) in fields {
        let field = format!("custom_fields.{k}");
        if k.is_empty() || k.chars().count() > 64 || k.chars().any(char::is_control) {
            problems.push(FieldProblem::new(
                field,
                "a custom field name must be 1 to 64 printable characters",
            ));
        } else if reserved.iter().any(|r| r.eq_ignore_ascii_case(k)) {
            problems.push(FieldProblem::new(
                field,
                format!("'{k}' is a built-in property; set it as its own field"),
            ));
        } else if v.chars().count() > 1024 {
            problems.push(FieldProblem::new(
                field,
                "a custom field value must be at most 1024 characters",
            ));
        }
    }
}

/// Checks an optional free-text field: at most `max` characters, no control characters other
/// than tab and newline.
pub fn check_text(field: &str, value: Option<&str>, max: usize, problems: &mut Vec<FieldProblem>) {
    if let Some(v) = value {
        if v.chars().count() > max {
            problems.push(FieldProblem::new(
                field,
                format!("must be at most {max} characters"),
            ));
        } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            problems.push(FieldProblem::new(
                field,
                "must not contain control characters",
            ));
        }
    }
}

/// Checks a required single-line name.
pub fn check_name(field: &str, value: &str, max: usize, problems: &mut Vec<FieldProblem>) {
    if value.trim().is_empty() {
        problems.push(FieldProblem::new(field, "must not be empty"));
    } else if value.chars().count() > max {
        problems.push(FieldProblem::new(
            field,
            format!("must be at most {max} characters"),
        ));
    } else if value.chars().any(char::is_control) {
        problems.push(FieldProblem::new(
            field,
            "must not contain control characters",
        ));
    }
}

/// For PATCH bodies: distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`, which clears it).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Serializes custom fields for storage.
pub fn encode_custom(fields: &BTreeMap<String, String>) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".into())
}

/// Reads stored custom fields; a damaged value reads as empty rather than failing a listing.
pub fn decode_custom(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}
