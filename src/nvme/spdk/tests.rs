//! The SPDK backend's own tests (the namespace suite runs on it too, from
//! nvme::suite): against the target `NVKV_SPDK_TRID` names.

use super::super::{Command, CommandKind};
use super::*;

#[test]
fn pci_addresses_are_taken_from_pcie_transport_ids_only() {
    assert_eq!(pci_address_of("trtype:PCIe traddr:0000:01:00.0").as_deref(), Some("0000:01:00.0"));
    assert_eq!(pci_address_of("trtype=pcie traddr=0000:5e:00.0").as_deref(), Some("0000:5e:00.0"));
    assert_eq!(pci_address_of("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.x"), None);
}

/// The namespace these tests write over: 1 and 2 belong to the
/// namespace suite and the shard log test, which run meanwhile.
const NSID: u32 = 3;

fn write_command(queue: &mut dyn QueuePair, lba: u64, fill: u8) -> Command {
    let mut buffer = queue.allocate(queue.info().lba_bytes as usize);
    buffer.fill(fill);
    Command::Write { lba, buffer, fua: true }
}

/// Bug: two shards (or tests) attaching one controller at once, or one
/// attaching while the last holder detaches it, must share a single
/// attachment and each drive its own queue pair.
#[test]
fn shards_attaching_one_controller_at_once_share_it() {
    let Some(options) = test_target(NSID, "the shared controller test") else { return };
    let rounds = 6;
    let threads = 2;
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        for shard in 0..threads {
            let (options, barrier) = (&options, &barrier);
            scope.spawn(move || {
                for round in 0..rounds {
                    // Both open at once, both hold a queue pair at once.
                    barrier.wait();
                    let namespace = SpdkNamespace::open(options)
                        .unwrap_or_else(|error| panic!("shard {shard} round {round}: open: {error}"));
                    assert!(Controller::attached(&options.transport) <= 1, "one attachment per transport");
                    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("qpair");
                    barrier.wait();
                    let last = queue.info().capacity_blocks - 1;
                    let lba = last - (shard * rounds + round) as u64;
                    let fill = (shard * 16 + round) as u8 + 1;
                    let command = write_command(queue.as_mut(), lba, fill);
                    let Command::Write { buffer, .. } = command else { unreachable!() };
                    crate::nvme::suite::write(queue.as_mut(), lba, buffer, true);
                    let read = crate::nvme::suite::read(queue.as_mut(), lba, 1);
                    assert!(read.iter().all(|&byte| byte == fill), "shard {shard} round {round} read back");
                    // Odd rounds drop at different times, so one
                    // shard's detach races the other's next attach.
                    if round % 2 == 1 && shard == 1 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
        }
    });
}

/// A TCP proxy between the host and the target that can hold the
/// target's answers and then cut every connection: a qpair failure
/// with commands in flight, on demand.
struct Proxy {
    port: u16,
    hold_answers: Arc<std::sync::atomic::AtomicBool>,
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let hold_answers = Arc::new(AtomicBool::new(false));
        let sockets: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (hold, kept) = (hold_answers.clone(), sockets.clone());
        std::thread::spawn(move || {
            for host in listener.incoming() {
                let Ok(host) = host else { return };
                let Ok(target) = std::net::TcpStream::connect(target) else { return };
                let _ = (host.set_nodelay(true), target.set_nodelay(true));
                {
                    let mut kept = kept.lock().expect("proxy sockets");
                    kept.push(host.try_clone().expect("clone"));
                    kept.push(target.try_clone().expect("clone"));
                }
                for (mut from, mut to, answers) in [
                    (host.try_clone().expect("clone"), target.try_clone().expect("clone"), false),
                    (target, host, true),
                ] {
                    let hold = hold.clone();
                    std::thread::spawn(move || {
                        let mut buffer = vec![0u8; 1 << 16];
                        loop {
                            let Ok(read) = from.read(&mut buffer) else { return };
                            if read == 0 {
                                return;
                            }
                            while answers && hold.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            if to.write_all(&buffer[..read]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, hold_answers, sockets }
    }

    fn cut(&self) {
        for socket in self.sockets.lock().expect("proxy sockets").iter() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `transport` with its trsvcid (port) replaced by `port`, and the
/// target's address.
fn through_proxy(transport: &str, port: u16) -> (String, std::net::SocketAddr) {
    let field = |key: &str| {
        transport.split_whitespace().find_map(|field| {
            let (name, value) = field.split_once([':', '='])?;
            name.eq_ignore_ascii_case(key).then(|| value.to_owned())
        })
    };
    let address = field("traddr").expect("NVKV_SPDK_TRID names a traddr");
    let service = field("trsvcid").expect("NVKV_SPDK_TRID names a trsvcid (a TCP target)");
    let target = format!("{address}:{service}").parse().expect("traddr:trsvcid is an IP address and port");
    let proxied = transport
        .split_whitespace()
        .map(|field| match field.split_once([':', '=']) {
            Some((name, _)) if name.eq_ignore_ascii_case("trsvcid") => format!("{name}:{port}"),
            _ => field.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    (proxied, target)
}

/// Bug: a queue pair whose connection broke left its commands in flight
/// for ever, and the shard hung. Now every one of them completes with
/// QueuePairFailed, later ones are refused, and nothing hangs.
#[test]
fn a_failed_queue_pair_fails_its_commands_instead_of_hanging() {
    use std::sync::atomic::Ordering;
    let Some(options) = test_target(NSID, "the failed queue pair test") else { return };
    if !options.transport.to_ascii_lowercase().contains("trtype:tcp") {
        panic!("the failed queue pair test needs a TCP target (it cuts the connection); NVKV_SPDK_TRID is not one");
    }
    let (transport, target) = through_proxy(&options.transport, 0);
    let proxy = Proxy::start(target);
    let (transport, _) = through_proxy(&transport, proxy.port);
    let namespace = SpdkNamespace::open(&SpdkOptions { transport, ..options })
        .expect("open the namespace through the proxy");
    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
    let last = queue.info().capacity_blocks - 1;
    let command = write_command(queue.as_mut(), last, 7);
    let Command::Write { buffer, .. } = command else { unreachable!() };
    crate::nvme::suite::write(queue.as_mut(), last, buffer, true);

    proxy.hold_answers.store(true, Ordering::Release);
    let commands = 8;
    for index in 0..commands {
        let command = write_command(queue.as_mut(), last - 1 - index, 9);
        queue.submit(command, index).unwrap_or_else(|rejected| panic!("submit: {}", rejected.error));
    }
    let mut completions = Vec::new();
    let held_until = std::time::Instant::now() + Duration::from_millis(200);
    while std::time::Instant::now() < held_until {
        queue.process_completions(&mut completions);
    }
    assert!(completions.is_empty(), "answers are held, yet {} commands completed", completions.len());
    assert_eq!(queue.in_flight(), commands as usize);

    proxy.cut();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while queue.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} commands still hang 20 s after the cut",
            queue.in_flight()
        );
        queue.process_completions(&mut completions);
    }
    assert_eq!(completions.len(), commands as usize);
    for completion in &completions {
        match &completion.result {
            Err(NvmeError::QueuePairFailed { kind: CommandKind::Write, namespace, .. }) => {
                assert!(namespace.contains(&proxy.port.to_string()), "{namespace}")
            }
            other => panic!("command {} ended with {other:?}, not QueuePairFailed", completion.tag),
        }
        assert!(completion.buffer.is_some(), "the buffer comes back");
    }
    let command = write_command(queue.as_mut(), last, 1);
    let rejected = queue.submit(command, 99).expect_err("a failed queue pair refuses commands");
    assert!(matches!(rejected.error, NvmeError::QueuePairFailed { .. }), "{:?}", rejected.error);
    assert!(rejected.error.is_device_failure());
    eprintln!("[spdk] after the cut: {}", rejected.error);
    // Closing a failed queue pair and detaching its failed controller
    // must not hang either (the test would time out).
    drop(queue);
    drop(namespace);
}
