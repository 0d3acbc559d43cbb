//! DJForge, rebuilt on sessionforge: `cargo run --example djforge`. See the `djforge` crate
//! (`examples/djforge/src/lib.rs`) for the environment, the routes and the stores.
//!
//! Ctrl-C or SIGTERM shuts down gracefully: open requests finish, their sessions are saved.

use djforge::settings::Settings;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::SessionStore;
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() {
    // Logs on standard error; standard output carries the startup summary only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sessionforge=info".into()),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("djforge: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let settings = Settings::from_env()?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_os_signals();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    sessionforge::metrics::describe();
    // The exporter keeps every histogram sample until it is drained: at a scrape, or here. Without
    // this, a process nobody scrapes grows by every store call's timing.
    let upkeep = metrics.clone();
    let stop = shutdown.signal();
    shutdown.register(tokio::spawn(async move {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => upkeep.run_upkeep(),
                () = &mut stop => break,
            }
        }
    }));

    let app = djforge::build(&settings, &shutdown, Some(metrics)).await?;
    println!(
        "Admin API: {} ({})",
        app.admin_mode,
        match app.admin_mode {
            "bearer" => "send Authorization: Bearer $SESSION_ADMIN_TOKEN",
            _ => "this machine only, without a proxy; set SESSION_ADMIN_TOKEN to use a token",
        }
    );
    if app.store.is_on_fallback() {
        println!(
            "Sessions: file store in {} (failing back to Redis when it answers)",
            settings.dir.display()
        );
    } else {
        println!("Sessions: {} at {}", app.store.name(), settings.redis);
    }

    let addr = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (PORT / HOST): {e}"))?;
    println!("DJForge listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.signal())
    .await?;

    let report = shutdown.drain(Duration::from_secs(10)).await;
    println!(
        "DJForge stopped ({} saves abandoned, {} tasks aborted)",
        report.saves_abandoned, report.tasks_aborted
    );
    Ok(())
}
