//! Why a config is refused ([`ConfigError`]), and the rewriting of the toml
//! parser's errors into one line that names the key, the line and what is
//! allowed.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config with a readable file, or leave it out to use the defaults")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config value {key} = {value} in {origin}: {reason}")]
    Invalid { key: String, value: String, origin: String, reason: String },
    #[error("unknown config key {key} in {origin}: {message}; see config/nvkv.toml for every key")]
    UnknownKey { key: String, origin: String, message: String },
    #[error("config file {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
}

impl ConfigError {
    pub(super) fn invalid(key: &str, value: impl fmt::Display, expected: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            origin: "the config".to_string(),
            reason: format!("expected {expected}"),
        }
    }

    /// Says which file the error came from.
    pub(super) fn in_origin(self, new_origin: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, value, reason, .. } => {
                ConfigError::Invalid { key, value, origin: new_origin.to_string(), reason }
            }
            other => other,
        }
    }
}

pub(super) fn with_hint(error: ConfigError, hint: &str) -> ConfigError {
    match error {
        ConfigError::Invalid { key, value, origin, reason } => {
            ConfigError::Invalid { key, value, origin, reason: format!("{reason}{hint}") }
        }
        other => other,
    }
}

pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |index| index + 1);
    (text[..offset].matches('\n').count() + 1, offset - line_start + 1)
}

pub(super) fn describe_syntax_error(error: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let origin = match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("{origin} line {line} column {column}")
        }
        None => origin.to_string(),
    };
    ConfigError::Syntax { origin, message }
}

/// Turns a TOML error into one line that names the file, line, key and
/// value. Serde reports a bad value with the span of the value, so the key
/// is read back from the text before it, and the section from the nearest
/// `[section]` header above.
pub(super) fn describe_toml_error(error: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return ConfigError::Syntax { origin: origin.to_string(), message };
    };
    let start = span.start.min(text.len());
    let line_number = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |index| index + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |index| start + index);
    let line = &text[line_start..line_end];
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|candidate| candidate.starts_with('[') && candidate.ends_with(']'))
        .map(|header| {
            header.trim_matches(|character| character == '[' || character == ']').trim().to_string()
        });
    let qualify = |key: &str| match &section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    };
    let origin_at_line = format!("{origin} line {line_number}");

    if message.starts_with("unknown field") {
        let key = text[span.clone()].trim().trim_matches('"').to_string();
        return ConfigError::UnknownKey { key: qualify(&key), origin: origin_at_line, message };
    }
    let column = start - line_start;
    if let Some(equals) = line.find('=').filter(|equals| *equals < column) {
        let key = line[..equals].trim();
        let value = text[span.clone()].trim();
        if !key.is_empty() && !key.starts_with('[') {
            return ConfigError::Invalid {
                key: qualify(key),
                value: value.to_string(),
                origin: origin_at_line,
                reason: message,
            };
        }
    }
    ConfigError::Syntax { origin: format!("{origin_at_line} column {}", column + 1), message }
}
