//! How values are written in a config file: sizes with binary units, socket
//! addresses, and the choices of an enum, each read with an error that says
//! what was expected.

use super::*;

/// `"busy" or "adaptive"`, for error messages.
pub(super) fn expected<T: ValueEnum>() -> String {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|value| value.to_possible_value())
        .map(|value| format!("\"{}\"", value.get_name()))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses `"512MiB"`, `"1 GiB"`, `"4096"`, `"8KiB"` (binary units only, so
/// there is never a doubt whether "1GB" meant 10^9 or 2^30).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|character: char| !character.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => TIB,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

pub(super) const BYTES_EXPECTED: &str =
    "a number of bytes: an integer or a string like \"512MiB\" or \"1GiB\" (units B, KiB, MiB, GiB, TiB)";

pub(super) fn deserialize_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| de::Error::custom("expected an IP address and a port, like \"127.0.0.1:7379\""))
}

pub(super) fn deserialize_optional_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    EtcdConfig::parse_address(&text).map_err(de::Error::custom)
}

pub(super) fn deserialize_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = u64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(BYTES_EXPECTED)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom(format!("expected {BYTES_EXPECTED}")))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            parse_bytes(value).ok_or_else(|| E::custom(format!("expected {BYTES_EXPECTED}")))
        }
    }

    deserializer.deserialize_any(BytesVisitor)
}
