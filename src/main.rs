//! The `limpet` binary: parses flags, sets up logging and the runtime, and runs the library.

use std::process::ExitCode;

use clap::Parser;
use limpet::cli::Cli;
use limpet::config::{LogFormat, LogSettings};

fn main() -> ExitCode {
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_logging(config.log);
    // The first worker: `run` starts the others, each with a runtime of its own (see
    // `proxy::Workers`).
    let runtime = match limpet::threads::runtime_builder().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("limpet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = {
        let _runtime = runtime.enter();
        match shutdown_signal() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("limpet: cannot listen for SIGTERM and SIGINT: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match runtime.block_on(limpet::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::error!("{message}");
            eprintln!("limpet: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(log: LogSettings) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(
            tracing_subscriber::filter::LevelFilter::from_level(log.level).into(),
        )
        .with_env_var("LIMPET_LOG")
        .from_env_lossy()
        // The HTTP stacks underneath are chatty at debug; their detail is rarely what an
        // operator debugging routing wants.
        .add_directive("hyper=info".parse().expect("static directive"))
        .add_directive("hyper_util=info".parse().expect("static directive"))
        .add_directive("bollard=info".parse().expect("static directive"));
    // Colour codes only for a person at a terminal: in `docker service logs`, journald or a
    // file they are noise that breaks grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the SIGTERM and SIGINT handlers now and returns the future that completes on
/// either. They must be in place before `run` binds the entrypoint: a handler installed on
/// the future's first poll leaves a window after the port opens in which SIGTERM (a `docker
/// stop` or rolling update right after start) gets the default action and kills limpet
/// without a graceful shutdown, or is ignored outright when limpet is PID 1 in a container.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
