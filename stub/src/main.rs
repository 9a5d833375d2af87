//! `switchyard-stub`: answers every task of the example definitions on one port, so the
//! examples run end to end on a laptop. Prints the `[tasks]` config that binds them.
//!
//! Faults on request: `curl -X PUT localhost:9090/_faults/hotels.reserve -d
//! '{"fault":"refuse","status":409}' -H 'content-type: application/json'`; what it did:
//! `curl localhost:9090/_ledger`.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Participant stub for the Switchyard examples")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// How long a pipeline job runs before it reports.
    #[arg(long, default_value_t = 500)]
    report_delay_ms: u64,
    /// Only print the `[tasks]` config for this address, then exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let stub = switchyard_stub::Stub::start(args.listen, Duration::from_millis(args.report_delay_ms)).await?;
    println!("{}", stub.bindings());
    if args.print_config {
        return Ok(());
    }
    eprintln!("switchyard-stub: serving every example task at {}", stub.base_url);
    tokio::select! {
        () = stub.serve_forever() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
