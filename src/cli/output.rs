//! How client commands print: this binary's `println!`/`print!`, JSON, the
//! answers of key-value operations as etcdctl prints them, and tables. It
//! must never decide what to ask a node: the command
//! modules do, and hand it what to print.

// `println!` and `print!` of this binary: a command whose reader went away
// (`nvkv get --prefix / | head`) ends quietly with status 141, as a shell
// reports a SIGPIPE, instead of panicking on the broken pipe. SIGPIPE itself
// stays ignored: sockets (TLS writes them with writev, which has no
// MSG_NOSIGNAL) must fail with an error, not kill the process.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::cli::output::stdout_failed(error)
        }
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = write!(std::io::stdout(), $($arg)*) {
            $crate::cli::output::stdout_failed(error)
        }
    }};
}

/// Ends the process after a failed write to stdout.
pub fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("nvkv: cannot write to stdout: {error}");
    std::process::exit(1)
}

/// Prints `value` as one line of JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!("{}", serde_json::to_string(value).map_err(|error| error.to_string())?);
    Ok(())
}

/// Bytes of a key or value as text (invalid UTF-8 shown replaced).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A key and its value on two lines, as etcdctl prints them.
pub fn print_key_value(key: &[u8], value: &[u8]) {
    println!("{}\n{}", text(key), text(value));
}

/// The results of a transaction's operations, each as its own command
/// prints it.
pub fn print_responses(responses: &[nvkv::kv::types::ResponseOp]) {
    use nvkv::kv::types::ResponseOp;
    for response in responses {
        match response {
            ResponseOp::Put(_) => println!("OK"),
            ResponseOp::Range(range) => {
                for kv in &range.kvs {
                    print_key_value(&kv.key, &kv.value);
                }
            }
            ResponseOp::DeleteRange(delete) => println!("{}", delete.deleted),
            ResponseOp::Txn(nested) => {
                println!("{}", if nested.succeeded { "SUCCESS" } else { "FAILURE" });
                print_responses(&nested.responses);
            }
        }
    }
}

/// A transaction's answer as JSON (the store's types are not serde types).
pub fn txn_json(answer: &nvkv::rpc::client::TxnAnswer) -> serde_json::Value {
    fn responses(list: &[nvkv::kv::types::ResponseOp]) -> serde_json::Value {
        use nvkv::kv::types::ResponseOp;
        serde_json::Value::Array(
            list.iter()
                .map(|response| match response {
                    ResponseOp::Put(put) => serde_json::json!({"put": {"revision": put.revision}}),
                    ResponseOp::Range(range) => serde_json::json!({"range": {
                        "revision": range.revision, "count": range.count, "more": range.more,
                        "kvs": range.kvs.iter().map(|kv| serde_json::json!({
                            "key": text(&kv.key), "value": text(&kv.value),
                            "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                            "version": kv.version, "lease": kv.lease,
                        })).collect::<Vec<_>>(),
                    }}),
                    ResponseOp::DeleteRange(delete) => {
                        serde_json::json!({"delete_range": {"revision": delete.revision, "deleted": delete.deleted}})
                    }
                    ResponseOp::Txn(nested) => serde_json::json!({"txn": {
                        "succeeded": nested.succeeded, "responses": responses(&nested.responses),
                    }}),
                })
                .collect(),
        )
    }
    serde_json::json!({
        "header": answer.header,
        "succeeded": answer.response.succeeded,
        "responses": responses(&answer.response.responses),
    })
}

/// Prints `rows` as a table whose columns are as wide as their widest
/// cell, two spaces apart, like etcdctl's tables.
pub fn print_table<const COLUMNS: usize>(rows: &[[String; COLUMNS]]) {
    let widths: Vec<usize> =
        (0..COLUMNS).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
