//! A smoke run of every load mode of the benchmark's generator through a
//! real wsgate and its echo backend, so that the harness keeps working as
//! the proxy changes. No performance is asserted: only that every echo
//! came back intact and nothing failed.

#[allow(dead_code)]
#[path = "../benches/load/loadgen/mod.rs"]
mod loadgen;

use std::net::SocketAddr;
use std::time::Duration;

use loadgen::client::Target;
use loadgen::{Mode, Options};

/// The window of each mode; the modes run side by side.
const WINDOW: Duration = Duration::from_secs(5);

/// Starts wsgate's echo backend and the proxy in front of it on their own
/// runtime thread; returns the proxy's address. They live until the test
/// process ends.
fn start_proxy() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo_addr = echo.local_addr().unwrap();
            tokio::spawn(wsgate::echo::serve(echo));
            let toml = format!(
                "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{echo_addr}\" }}]\n"
            );
            let config = wsgate::config::parse(&toml, std::path::Path::new("."), "smoke.toml").unwrap();
            let server = wsgate::server::Server::start(config, None).await.unwrap();
            tx.send(server.local_addr("main").unwrap()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("proxy started")
}

fn options(addr: SocketAddr, connections: u32) -> Options {
    Options {
        target: Target::parse(&format!("ws://{addr}/echo")).unwrap(),
        tls: None,
        connections,
        duration: WINDOW,
        warmup: Duration::from_millis(200),
        sources: 4,
        pids: vec![std::process::id()],
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn every_load_mode_runs_cleanly_through_wsgate() {
    let addr = start_proxy();
    let modes: Vec<(u32, Box<dyn FnOnce() -> Mode + Send>)> = vec![
        (
            8,
            Box::new(|| Mode::Rtt {
                size: 64,
                rate: 500.0,
            }),
        ),
        (
            4,
            Box::new(|| Mode::Throughput {
                size: 16 * 1024,
                in_flight: 4,
            }),
        ),
        (2, Box::new(|| Mode::Handshake)),
        (
            200,
            Box::new(|| Mode::Idle {
                settle: Duration::ZERO,
                on_ready: Box::new(|_| {}),
            }),
        ),
    ];
    let runs: Vec<_> = modes
        .into_iter()
        .map(|(connections, mode)| {
            std::thread::spawn(move || loadgen::run(options(addr, connections), mode()))
        })
        .collect();
    for run in runs {
        let report = run
            .join()
            .expect("the run did not panic")
            .expect("the run started");
        let errors: Vec<_> = report
            .live
            .errors
            .by_name()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(errors, [], "{}", report.summary());
        let live = &report.live;
        let progressed = live.received.get() + live.cycles.get() + live.opened.get() > 0;
        assert!(progressed, "{}", report.summary());
    }
}
