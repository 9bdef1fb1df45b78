//! `test-probe`: a listener for the test suite, not for production. Its first parameter
//! names a behaviour, the rest are that behaviour's arguments, so one small component can
//! probe every capability and limit of the host.

use lockstep_sdk::{
    Event, Listener, PostOutcome, PreOutcome, describe, exec, export_listener, log, props, secrets,
    target_exec,
};

fn run(event: &Event) -> Result<String, String> {
    let p = &event.parameters;
    let arg = |i: usize| p.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "ok" => Ok(format!(
            "{}:{:?}:{:?}",
            event.job_id, event.phase, event.trigger
        )),
        // The benchmark's listener: read two properties, answer.
        "two-props" => {
            let name = props::resource("RESOURCENAME").map_err(|e| describe(&e))?;
            let login = props::account("LOGINNAME").map_err(|e| describe(&e))?;
            Ok(format!(
                "{} {}",
                name.unwrap_or_default(),
                login.unwrap_or_default()
            ))
        }
        "fresh-memory" => Ok(fresh_memory()),
        // Which delivery and attempt this run is (`none` for a pre-reset run).
        "delivery" => Ok(event
            .delivery
            .as_ref()
            .map(|d| format!("{}#{}", d.id, d.attempt))
            .unwrap_or_else(|| "none".into())),
        "resource-prop" => props::resource(&arg(1))
            .map(|v| v.unwrap_or_else(|| "<none>".into()))
            .map_err(|e| describe(&e)),
        "account-prop" => props::account(&arg(1))
            .map(|v| v.unwrap_or_else(|| "<none>".into()))
            .map_err(|e| describe(&e)),
        "old-password" => secrets::old_password().map_err(|e| describe(&e)),
        "new-password" => secrets::new_password().map_err(|e| describe(&e)),
        "exec" | "target-exec" => {
            let args: Vec<&str> = p[2..].iter().map(String::as_str).collect();
            let out = if arg(0) == "exec" {
                exec::run(&arg(1), &args)
            } else {
                target_exec::run(&arg(1), &args)
            };
            out.map(|o| {
                format!(
                    "{}|{}|{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .map_err(|e| describe(&e))
        }
        "log" => {
            log::debug("d");
            log::info("i");
            log::warn("w");
            log::error("e");
            Ok("logged".into())
        }
        "deny-flood" => {
            for _ in 0..10_000 {
                let _ = props::resource("NOT_GRANTED");
            }
            let _ = props::resource(&"K".repeat(1 << 20));
            Ok("flooded denials".into())
        }
        "log-escape" => {
            log::info("line one\nforged: admin approved\u{1b}[31m");
            Ok("escaped".into())
        }
        "log-flood" => {
            let line = "x".repeat(1000);
            for _ in 0..100_000 {
                log::info(&line);
            }
            Ok("flooded".into())
        }
        "stdout-flood" => {
            let line = "y".repeat(1000);
            for _ in 0..100_000 {
                println!("{line}");
            }
            Ok("printed".into())
        }
        "spin" => loop {
            std::hint::black_box(0u64);
        },
        "hostcall-spin" => loop {
            let _ = props::resource("RESOURCENAME");
        },
        "alloc" => {
            let mut v: Vec<Vec<u8>> = Vec::new();
            loop {
                v.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&v);
            }
        }
        "recurse" => Ok(recurse(0).to_string()),
        "panic" => panic!("probe panicked on purpose"),
        "huge-result" => Ok("z".repeat(8 << 20)),
        "env" => Ok(std::env::vars()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
            .join(",")),
        "read-file" => std::fs::read_to_string(arg(1)).map_err(|e| e.to_string()),
        "http" => lockstep_sdk::http::request(
            &fill(&arg(1))?,
            &fill(&arg(2))?,
            &[("x-probe", "1")],
            arg(3).as_bytes(),
            4096,
        )
        .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
        .map_err(|e| e.to_string()),
        // Follows one redirect: the second request is checked like the first.
        "http-follow" => {
            let first = lockstep_sdk::http::request("GET", &arg(1), &[], &[], 4096)
                .map_err(|e| e.to_string())?;
            let Some(next) = first.header("location") else {
                return Err(format!("{} without a location", first.status));
            };
            lockstep_sdk::http::request("GET", &next, &[], &[], 4096)
                .map(|r| format!("followed to {next}: {}", r.status))
                .map_err(|e| format!("following {} to {next}: {e}", first.status))
        }
        // The same GET, N times in one run: past the connection budget.
        "http-repeat" => {
            let n: usize = arg(1)
                .parse()
                .map_err(|_| "http-repeat COUNT URL".to_string())?;
            let url = fill(&arg(2))?;
            let mut last = String::new();
            for _ in 0..n {
                last = match lockstep_sdk::http::request("GET", &url, &[], &[], 4096) {
                    Ok(r) => r.status.to_string(),
                    Err(e) => e.to_string(),
                };
            }
            Ok(last)
        }
        // Sends TEXT (with `{new}` filled in) out of the run through one exit: the answer,
        // a failure (a veto before a reset), a log line, stdout, stderr, a property key.
        "emit" => {
            let text = fill(&arg(2))?;
            match arg(1).as_str() {
                "answer" => Ok(text),
                "failure" => Err(text),
                "log" => {
                    log::info(&text);
                    Ok("logged".into())
                }
                "stdout" | "stderr" => {
                    use std::io::Write;
                    // The stream stops at the output cap; what does not fit is dropped.
                    let _ = if arg(1) == "stdout" {
                        let mut out = std::io::stdout().lock();
                        out.write_all(text.as_bytes()).and_then(|()| out.flush())
                    } else {
                        std::io::stderr().lock().write_all(text.as_bytes())
                    };
                    Ok("written".into())
                }
                "prop" => props::resource(&text)
                    .map(|v| v.unwrap_or_default())
                    .map_err(|e| describe(&e)),
                other => Err(format!("emit: unknown exit '{other}'")),
            }
        }
        // A veto whose reason is far beyond any sane size (the host cuts it).
        "veto-huge" => Err("v".repeat(1 << 20)),
        "tcp" => {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(arg(1).as_str())
                .map_err(|e| format!("connect: {e}"))?;
            s.write_all(b"ping").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        // COUNT outgoing requests, each with KIB headers of 1 KiB and its body written as far
        // as the host takes it, never sent and never dropped: host memory the guest holds
        // (for HOLD_MS more, if given).
        "http-hoard" => {
            use wasi::http::types::{Fields, OutgoingRequest};
            let usage = || "http-hoard COUNT KIB [HOLD_MS]".to_string();
            let n: usize = arg(1).parse().map_err(|_| usage())?;
            let kib: usize = arg(2).parse().map_err(|_| usage())?;
            let pad = vec![b'p'; 1024];
            let mut kept = Vec::new();
            for i in 0..n {
                let fields = Fields::new();
                for j in 0..kib {
                    fields
                        .append(&format!("x-pad-{j}"), &pad)
                        .map_err(|e| format!("header {j} of request {i}: {e:?}"))?;
                }
                let request = OutgoingRequest::new(fields);
                let body = request.body().map_err(|()| format!("body {i}"))?;
                let stream = body.write().map_err(|()| format!("write {i}"))?;
                loop {
                    match stream.check_write() {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            let chunk = vec![b'b'; (k as usize).min(1 << 20)];
                            if stream.write(&chunk).is_err() {
                                break;
                            }
                        }
                    }
                }
                kept.push((stream, body, request));
            }
            let count = kept.len();
            // Optionally held for HOLD_MS more (so that many runs hold theirs at once), then
            // to the end of the run: the host drops them with the store.
            if let Ok(hold) = arg(3).parse::<u64>() {
                std::thread::sleep(std::time::Duration::from_millis(hold));
            }
            std::mem::forget(kept);
            Ok(format!("hoarded {count}"))
        }
        // Bind a TCP socket to the wildcard address and listen on it: a server inside the host.
        "tcp-listen" => {
            use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
            let network = wasi::sockets::instance_network::instance_network();
            let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
                .map_err(|e| format!("create: {e:?}"))?;
            let any = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: 0,
                address: (0, 0, 0, 0),
            });
            socket
                .start_bind(&network, any)
                .map_err(|e| format!("bind: {e:?}"))?;
            socket.subscribe().block();
            socket.finish_bind().map_err(|e| format!("bind: {e:?}"))?;
            socket
                .start_listen()
                .map_err(|e| format!("listen: {e:?}"))?;
            socket.subscribe().block();
            socket
                .finish_listen()
                .map_err(|e| format!("listen: {e:?}"))?;
            let port = socket
                .local_address()
                .map(|a| match a {
                    IpSocketAddress::Ipv4(a) => a.port,
                    IpSocketAddress::Ipv6(a) => a.port,
                })
                .map_err(|e| format!("local address: {e:?}"))?;
            Ok(format!("listening on port {port}"))
        }
        // COUNT TCP sockets, created and never connected: file descriptors the guest holds.
        "socket-hoard" => {
            use wasi::sockets::network::IpAddressFamily;
            let n: usize = arg(1)
                .parse()
                .map_err(|_| "socket-hoard COUNT".to_string())?;
            let mut kept = Vec::new();
            for i in 0..n {
                match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
                    Ok(s) => kept.push(s),
                    Err(e) => return Err(format!("socket {i}: {e:?}")),
                }
            }
            Ok(format!("hoarded {}", kept.len()))
        }
        "clock" => Ok(format!(
            "{:?}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .is_ok()
        )),
        other => Err(format!("unknown probe behaviour '{other}'")),
    }
}

/// `text` with `{new}` replaced by the new password and `{new%}` by the same percent-encoded:
/// how a test puts a granted password where the host must not let it out.
fn fill(text: &str) -> Result<String, String> {
    if !text.contains("{new") {
        return Ok(text.to_string());
    }
    let password = secrets::new_password().map_err(|e| describe(&e))?;
    let encoded: String = password.bytes().map(|b| format!("%{b:02X}")).collect();
    Ok(text.replace("{new}", &password).replace("{new%}", &encoded))
}

/// Unbounded on purpose: the host must stop it (stack exhaustion traps).
#[inline(never)]
#[allow(unconditional_recursion, clippy::only_used_in_recursion)]
fn recurse(n: u64) -> u64 {
    std::hint::black_box(recurse(n + 1)) + 1
}

struct Probe;

impl Listener for Probe {
    fn pre_reset(event: Event) -> PreOutcome {
        match run(&event) {
            Ok(_) if event.parameters.first().map(String::as_str) == Some("veto") => {
                PreOutcome::Veto("vetoed".into())
            }
            Ok(text) => {
                log::info(&text);
                PreOutcome::Proceed
            }
            Err(e) => PreOutcome::Veto(e),
        }
    }

    fn post_reset(event: Event) -> PostOutcome {
        // `retry-until N`: answers `retry` until attempt N, which succeeds (saying how long the
        // new password is, when it is granted one).
        if event.parameters.first().map(String::as_str) == Some("retry-until") {
            let last: u32 = event
                .parameters
                .get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let attempt = event.delivery.as_ref().map_or(0, |d| d.attempt);
            return if attempt >= last {
                let told = secrets::new_password()
                    .map(|p| format!("; new password of {} characters", p.chars().count()))
                    .unwrap_or_default();
                PostOutcome::Success(format!("delivered at attempt {attempt}{told}"))
            } else {
                PostOutcome::Retry(format!("attempt {attempt} of {last}"))
            };
        }
        match run(&event) {
            Ok(text) => PostOutcome::Success(text),
            Err(e) => PostOutcome::Failure(e),
        }
    }
}

export_listener!(Probe);

/// Bytes of static memory `fresh-memory` checks and then dirties (more than the host keeps
/// resident between runs, so both of its reset paths are crossed).
const SCRATCH_BYTES: usize = 256 * 1024;
static SCRATCH: [std::sync::atomic::AtomicU8; SCRATCH_BYTES] =
    [const { std::sync::atomic::AtomicU8::new(0) }; SCRATCH_BYTES];
/// Initialised data (not zero): a run that sees anything but 7 saw an earlier run's write.
static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(7);

/// Reports what this instance found left over from earlier runs, then leaves its own mark
/// everywhere it can: static zeroed memory, initialised data, and freshly grown pages.
/// A host that gives every run a pristine instance answers `dirty=0 runs=7 grown=0 pages=N`
/// with the same N every time.
fn fresh_memory() -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let dirty = SCRATCH.iter().filter(|b| b.load(Relaxed) != 0).count();
    let runs = RUNS.fetch_add(1, Relaxed);
    for b in &SCRATCH {
        b.store(0xa5, Relaxed);
    }
    #[cfg(target_arch = "wasm32")]
    let (pages, grown) = {
        use core::arch::wasm32::{memory_grow, memory_size};
        let pages = memory_size(0);
        let old = memory_grow(0, 4);
        let mut grown = 0;
        if old != usize::MAX {
            let start = (old * 65536) as *mut u8;
            for i in 0..4 * 65536 {
                // SAFETY: the pages [old, old + 4) were just added to linear memory by
                // memory.grow and nothing else uses them; wasm defines their contents.
                unsafe {
                    if start.add(i).read_volatile() != 0 {
                        grown += 1;
                    }
                    start.add(i).write_volatile(0x5a);
                }
            }
        }
        (pages, grown)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let (pages, grown) = (0, 0);
    format!("dirty={dirty} runs={runs} grown={grown} pages={pages}")
}
