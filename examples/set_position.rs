//! The remote-control example of the Vuer docs, in Rust: 200 `SET_POSITION`
//! events along a sine path at 60 Hz, then a count of the events the server
//! sent back.
//!
//! ```text
//! python examples/server.py                 # terminal 1 (pip install vuer==0.1.6)
//! cargo run --example set_position          # terminal 2
//! ```
//!
//! The server URI comes from `VUER_CLIENT_URI` (default `ws://localhost:8012`).

use std::time::Duration;

use serde::Serialize;
use vuer_client::{Coalesce, Event, VuerClient};

/// `class SetPositionEvent(ClientEvent): etype = "SET_POSITION"`
#[derive(Serialize)]
struct SetPosition([f32; 3]);

impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
    // Every position is an animation frame the server should see: send them
    // all, as the Python example does, instead of coalescing.
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut client = VuerClient::builder().connect().await?;
    println!("connected to {}", client.uri());

    let mut tick = tokio::time::interval(Duration::from_millis(16)); // ~60 FPS
    for i in 0..200 {
        tick.tick().await;
        let t = i as f32 * 0.05;
        let x = t.sin() * 2.0;
        let y = 0.5 + (t * 2.0).sin() * 0.3;
        client.send(&SetPosition([x, y, 0.0])).await?;
    }
    client.flush().await?;

    // Collect what the server sent back (the scene, then one UPSERT per
    // position) until it has been quiet for a second.
    let mut received = 0;
    while let Some(event) = client.recv_timeout(Duration::from_secs(1)).await {
        received += 1;
        print_event(&event);
    }
    let stats = client.stats();
    client.close().await?;
    println!(
        "sent {} SET_POSITION events; received {received} server events",
        stats.sent
    );
    Ok(())
}

fn print_event(event: &vuer_client::ServerEvent) {
    if event.etype() != "UPSERT" {
        println!("server event: {}", event.etype());
    }
}
