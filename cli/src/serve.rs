//! `serve`: the crate's in-process [`LocalServer`] as a standalone server,
//! to try the other commands without Python. It speaks the Vuer 0.1.6 wire
//! protocol (answers INIT with a small scene, optionally echoes an etype
//! with UPSERTs as Vuer's remote-control example does), prints its URI
//! once it listens, and its counters on Ctrl-C.

use std::io::Write;
use std::sync::Arc;

use vuer_client_testkit::server::{LocalServer, Received, ServerOptions};

use crate::cli::ServeArgs;
use crate::error::CliError;
use crate::output::Printer;
use crate::signal::Interrupt;

/// Runs `serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .map_err(|e| CliError::Usage(format!("--host {:?}: {e}", args.host)))?
        .next()
        .ok_or_else(|| CliError::Usage(format!("--host {:?}: no address", args.host)))?;
    let printer = Printer::new(args.format);
    let on_event = args.print.then(|| {
        Arc::new(move |r: &Received| {
            // A closed stdout must not stop the server.
            let _ = writeln!(std::io::stdout().lock(), "{}", printer.line(&r.event));
        }) as vuer_client_testkit::server::EventHook
    });
    let opts = ServerOptions {
        addr,
        scene_on_init: !args.no_scene,
        upsert_on: args.echo.clone(),
        // Only the counters and the hook are used: keep no history.
        record_limit: 1,
        on_event,
        ..ServerOptions::default()
    };
    let mut interrupt = Interrupt::install();
    let server = LocalServer::start(opts)
        .await
        .map_err(|e| CliError::io(format!("cannot listen on {addr}"), e))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.uri())
            .and_then(|_| out.flush())
            .map_err(|e| CliError::io("cannot write to stdout", e))?;
    }
    crate::output::err(format_args!("vuer-client: serving; Ctrl-C to stop\n"));
    interrupt.wait().await;
    let s = server.stats();
    server.shutdown();
    crate::output::out(&format!(
        "connections {} (open {}), events {} (INIT {}), frames {}, bytes {}, bad messages {}, pings {}, close frames {}",
        s.connections, s.open, s.events, s.inits, s.frames, s.bytes, s.bad_messages, s.pings, s.closes
    ))
}
