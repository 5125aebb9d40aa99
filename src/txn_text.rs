//! The text form `nvkv txn` reads, like etcdctl's interactive txn: three
//! sections separated by an empty line: compares, the operations to run if
//! every compare holds, and the operations to run otherwise.
//!
//! ```text
//! mod("/registry/pods/a") > 0
//! value("/registry/pods/a") = "old"
//!
//! put /registry/pods/a "new value"
//! get /registry/pods/a
//!
//! get /registry/pods/a
//! ```
//!
//! Compares: `value|version|create|mod|lease("KEY") =|!=|<|> OPERAND`, the
//! operand a quoted string for `value`, an integer otherwise. Operations:
//! `put KEY VALUE`, `get KEY [RANGE_END]`, `del KEY [RANGE_END]`. Keys and
//! values are bare words or double-quoted strings (`\"` and `\\` inside).
//! Lines starting with `#` are comments. This module only parses.

use crate::kv::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};

/// Parses a transaction; the error names the line and what was expected.
pub fn parse(text: &str) -> Result<TxnRequest, String> {
    let mut sections: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if sections.len() < 3 {
                sections.push(Vec::new());
            }
            continue;
        }
        sections.last_mut().expect("at least one section").push((number + 1, line));
    }
    sections.resize(3, Vec::new());
    let compares =
        sections[0].iter().map(|(number, line)| compare(*number, line)).collect::<Result<_, _>>()?;
    let success =
        sections[1].iter().map(|(number, line)| operation(*number, line)).collect::<Result<_, _>>()?;
    let failure =
        sections[2].iter().map(|(number, line)| operation(*number, line)).collect::<Result<_, _>>()?;
    Ok(TxnRequest { compares, success, failure })
}

/// Splits a line into words, honouring double quotes.
fn words(number: usize, line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut characters = line.chars().peekable();
    while let Some(&character) = characters.peek() {
        if character.is_whitespace() {
            characters.next();
            continue;
        }
        let mut word = String::new();
        if character == '"' {
            characters.next();
            loop {
                match characters.next() {
                    Some('"') => break,
                    Some('\\') => match characters.next() {
                        Some(escaped @ ('"' | '\\')) => word.push(escaped),
                        other => {
                            return Err(format!("line {number}: unknown escape \\{}", other.unwrap_or(' ')))
                        }
                    },
                    Some(other) => word.push(other),
                    None => return Err(format!("line {number}: a quoted string is not closed")),
                }
            }
        } else {
            while let Some(&next) = characters.peek() {
                if next.is_whitespace() {
                    break;
                }
                word.push(next);
                characters.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

fn compare(number: usize, line: &str) -> Result<Compare, String> {
    let expected = || {
        format!("line {number}: expected a compare like mod(\"KEY\") > 0 or value(\"KEY\") = \"VALUE\", found {line:?}")
    };
    let (name, rest) = line.split_once('(').ok_or_else(expected)?;
    let close = rest.rfind(')').ok_or_else(expected)?;
    let key_words = words(number, &rest[..close])?;
    let [key] = key_words.as_slice() else { return Err(expected()) };
    let tail = words(number, &rest[close + 1..])?;
    let [operator, operand] = tail.as_slice() else { return Err(expected()) };
    let result = match operator.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        other => return Err(format!("line {number}: unknown comparison {other:?}; use =, !=, < or >")),
    };
    let integer = || {
        operand
            .parse::<i64>()
            .map_err(|_| format!("line {number}: {operand:?} is not an integer ({name} compares one)"))
    };
    let target = match name.trim() {
        "value" => CompareTarget::Value(operand.clone().into_bytes()),
        "version" => CompareTarget::Version(integer()?),
        "create" => CompareTarget::CreateRevision(integer()?),
        "mod" => CompareTarget::ModRevision(integer()?),
        "lease" => CompareTarget::Lease(integer()?),
        other => {
            return Err(format!(
                "line {number}: unknown compare target {other:?}; use value, version, create, mod or lease"
            ))
        }
    };
    Ok(Compare { key: key.clone().into_bytes(), range_end: Vec::new(), target, result })
}

fn operation(number: usize, line: &str) -> Result<RequestOp, String> {
    let words = words(number, line)?;
    let bytes = |word: &String| word.clone().into_bytes();
    match words.as_slice() {
        [verb, key, value] if verb == "put" => {
            Ok(RequestOp::Put(PutRequest { key: bytes(key), value: bytes(value), ..PutRequest::default() }))
        }
        [verb, key] if verb == "get" => Ok(RequestOp::Range(RangeRequest { key: bytes(key), ..RangeRequest::default() })),
        [verb, key, end] if verb == "get" => {
            Ok(RequestOp::Range(RangeRequest { key: bytes(key), range_end: bytes(end), ..RangeRequest::default() }))
        }
        [verb, key] if verb == "del" => {
            Ok(RequestOp::DeleteRange(DeleteRangeRequest { key: bytes(key), ..DeleteRangeRequest::default() }))
        }
        [verb, key, end] if verb == "del" => Ok(RequestOp::DeleteRange(DeleteRangeRequest {
            key: bytes(key),
            range_end: bytes(end),
            ..DeleteRangeRequest::default()
        })),
        _ => Err(format!(
            "line {number}: expected put KEY VALUE, get KEY [RANGE_END] or del KEY [RANGE_END], found {line:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = "mod(\"/registry/pods/a\") > 0\nvalue(\"/registry/pods/a\") = \"old\"\n\n\
                    put /registry/pods/a \"new value\"\nget /registry/pods/a\n\n# otherwise\nget /registry/pods/a\n";
        let txn = parse(text).expect("parses");
        assert_eq!(txn.compares.len(), 2);
        assert_eq!(txn.compares[0].target, CompareTarget::ModRevision(0));
        assert_eq!(txn.compares[0].result, CompareResult::Greater);
        assert_eq!(txn.compares[1].target, CompareTarget::Value(b"old".to_vec()));
        assert_eq!(
            txn.success[0],
            RequestOp::Put(PutRequest {
                key: b"/registry/pods/a".to_vec(),
                value: b"new value".to_vec(),
                ..PutRequest::default()
            })
        );
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn quotes_and_escapes_are_honoured() {
        let txn = parse("\n\nput \"a key\" \"say \\\"hi\\\" \\\\ ok\"\n").expect("parses");
        let RequestOp::Put(put) = &txn.failure[0] else { panic!("a put") };
        assert_eq!(put.key, b"a key");
        assert_eq!(put.value, b"say \"hi\" \\ ok");
    }

    #[test]
    fn mistakes_name_the_line() {
        assert!(parse("mod(\"a\") >> 1").unwrap_err().contains("line 1: unknown comparison \">>\""));
        assert!(parse("version(\"a\") = x").unwrap_err().contains("line 1: \"x\" is not an integer"));
        assert!(parse("size(\"a\") = 1").unwrap_err().contains("unknown compare target \"size\""));
        assert!(parse("\nput a").unwrap_err().contains("line 2: expected put KEY VALUE"));
        assert!(parse("\nput \"a b").unwrap_err().contains("line 2: a quoted string is not closed"));
    }
}
