//! The KV stream as any client of the schema speaks it (schema/nvkv.capnp,
//! "The KV stream"): raw bytes to a real `nvkv serve`, the opening, calls
//! several to a message, replies matched by id, typed refusals, and a
//! connection that sends garbage closed alone.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use nvkv::nvkv_capnp::{kv_calls, kv_replies, kv_reply, ErrorCode};

const MAGIC: &[u8; 8] = b"nvkvKVS1";

/// A call of a test, as it goes into a message.
enum Call<'a> {
    Put(&'a [u8], &'a [u8]),
    Get(&'a [u8]),
    Ping,
}

/// What a reply said, as far as the tests look.
#[derive(Debug, PartialEq)]
enum Reply {
    Put { revision: i64 },
    Get { values: Vec<Vec<u8>> },
    Ping,
    Refused(ErrorCode),
}

fn open(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(MAGIC).expect("write the opening");
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer).expect("the node answers the opening");
    assert_eq!(&answer, MAGIC, "the node opens the stream with the same 8 bytes");
    stream
}

/// Opens a stream with version 2 of the opening and `token`; it must open.
fn open_session(port: u16, token: &str) -> TcpStream {
    use nvkv::nvkv_capnp::{kv_open, kv_opened};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"nvkvKVS2").expect("write the opening");
    let mut message = capnp::message::Builder::new_default();
    message.init_root::<kv_open::Builder<'_>>().set_token(token);
    capnp::serialize::write_message(&mut stream, &message).expect("send the KvOpen");
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer).expect("the node answers the opening");
    assert_eq!(&answer, b"nvkvKVS2", "the node answers with the same 8 bytes");
    let opened = capnp::serialize::read_message(&mut stream, capnp::message::ReaderOptions::new())
        .expect("a KvOpened");
    let opened = opened.get_root::<kv_opened::Reader<'_>>().expect("KvOpened");
    assert!(matches!(opened.which(), Ok(kv_opened::Ok(()))), "the stream opened");
    stream
}

fn send(stream: &mut TcpStream, calls: &[(u64, Call<'_>)]) {
    let mut message = capnp::message::Builder::new_default();
    let mut list = message.init_root::<kv_calls::Builder<'_>>().init_calls(calls.len() as u32);
    for (position, (id, call)) in calls.iter().enumerate() {
        let mut out = list.reborrow().get(position as u32);
        out.set_id(*id);
        match call {
            Call::Put(key, value) => {
                let mut put = out.init_put();
                put.set_key(key);
                put.set_value(value);
            }
            Call::Get(key) => out.init_range().init_request().set_key(key),
            Call::Ping => out.set_ping(()),
        }
    }
    capnp::serialize::write_message(&mut *stream, &message).expect("send a message");
}

/// Reads replies until `ids` are all answered; fails on a reply twice.
fn receive(stream: &mut TcpStream, ids: usize) -> HashMap<u64, (Reply, u64)> {
    let mut replies = HashMap::new();
    while replies.len() < ids {
        let message = capnp::serialize::read_message(&mut *stream, capnp::message::ReaderOptions::new())
            .expect("a reply message");
        for reply in
            message.get_root::<kv_replies::Reader<'_>>().expect("replies").get_replies().expect("list")
        {
            let read = read_reply(reply);
            let previous = replies.insert(reply.get_id(), (read, reply.get_server_nanos()));
            assert!(previous.is_none(), "call {} answered twice", reply.get_id());
        }
    }
    replies
}

fn read_reply(reply: kv_reply::Reader<'_>) -> Reply {
    use nvkv::nvkv_capnp::{put_result, range_result};
    match reply.which().expect("a known reply") {
        kv_reply::Ping(()) => Reply::Ping,
        kv_reply::Put(result) => match result.expect("put").which().expect("put result") {
            put_result::Ok(ok) => {
                Reply::Put { revision: ok.expect("ok").get_header().expect("header").get_revision() }
            }
            put_result::Error(error) => Reply::Refused(error.expect("error").get_code().expect("code")),
        },
        kv_reply::Range(result) => match result.expect("range").which().expect("range result") {
            range_result::Ok(ok) => Reply::Get {
                values: ok
                    .expect("ok")
                    .get_kvs()
                    .expect("kvs")
                    .iter()
                    .map(|kv| kv.get_value().expect("value").to_vec())
                    .collect(),
            },
            range_result::Error(error) => Reply::Refused(error.expect("error").get_code().expect("code")),
        },
        kv_reply::DeleteRange(_) | kv_reply::Txn(_) => {
            panic!("a reply of a kind no call of this test asked for")
        }
    }
}

#[test]
fn calls_share_messages_and_each_gets_its_own_reply() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let mut stream = open(port);

    tracing_log("a put, then a get that sees it, and a ping, in one message each way");
    send(&mut stream, &[(7, Call::Put(b"/a/1", b"one")), (9, Call::Ping)]);
    let replies = receive(&mut stream, 2);
    let Reply::Put { revision } = replies[&7].0 else { panic!("{replies:?}") };
    assert!(revision >= 2, "a put moves its group's revision: {revision}");
    assert!(replies[&7].1 > 0, "the node says how long the put took in it");
    assert_eq!(replies[&9].0, Reply::Ping);
    send(&mut stream, &[(8, Call::Get(b"/a/1"))]);
    assert_eq!(receive(&mut stream, 1)[&8].0, Reply::Get { values: vec![b"one".to_vec()] });

    tracing_log("refusals are typed and answer their call alone");
    let long_value = vec![b'v'; 2 << 20];
    send(&mut stream, &[(10, Call::Put(b"", b"x")), (11, Call::Put(b"/a/2", &long_value)), (12, Call::Ping)]);
    let replies = receive(&mut stream, 3);
    assert_eq!(replies[&10].0, Reply::Refused(ErrorCode::InvalidArgument), "an empty key");
    assert!(
        matches!(replies[&11].0, Reply::Refused(ErrorCode::ValueTooLarge | ErrorCode::RequestTooLarge)),
        "a 2 MiB value: {:?}",
        replies[&11].0
    );
    assert_eq!(replies[&12].0, Reply::Ping);

    tracing_log("500 puts in one message, each answered once with its own revision");
    let keys: Vec<Vec<u8>> = (0..500).map(|number| format!("/b/{number}").into_bytes()).collect();
    let calls: Vec<(u64, Call<'_>)> =
        keys.iter().enumerate().map(|(id, key)| (1000 + id as u64, Call::Put(key, b"v"))).collect();
    send(&mut stream, &calls);
    let replies = receive(&mut stream, calls.len());
    assert!(replies.values().all(|(reply, _)| matches!(reply, Reply::Put { .. })), "{replies:?}");

    tracing_log("version 2 of the opening: a KvOpen, answered by the node's 8 bytes and a KvOpened");
    let mut session = open_session(port, "");
    send(&mut session, &[(1, Call::Get(b"/a/1"))]);
    assert_eq!(receive(&mut session, 1)[&1].0, Reply::Get { values: vec![b"one".to_vec()] });

    tracing_log("garbage after the opening closes that stream alone");
    let mut garbage = open(port);
    garbage.write_all(&[0xff; 64]).expect("write");
    let mut buffer = [0u8; 16];
    let closed = matches!(garbage.read(&mut buffer), Ok(0) | Err(_));
    assert!(closed, "the node closes a stream that sends garbage");
    send(&mut stream, &[(2000, Call::Ping)]);
    assert_eq!(receive(&mut stream, 1)[&2000].0, Reply::Ping, "the other stream goes on");
    assert_eq!(client(port, &["get", "/a/1"]).expect("get"), "/a/1\none\n", "and so do other clients");

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Says what a phase of the test checks, in its output.
fn tracing_log(phase: &str) {
    eprintln!("kv_stream test: {phase}");
}
