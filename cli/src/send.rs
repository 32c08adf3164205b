//! `send`: one event, written, then a clean close.

use tokio::io::AsyncReadExt;
use vuer_client::{DynEvent, Value};

use crate::cli::{Common, SendArgs};
use crate::connect;
use crate::error::CliError;
use crate::json::{self, Floats};

/// Runs `send`. The value is checked before connecting, so a typo costs no
/// connection.
pub async fn run(common: &Common, args: SendArgs) -> Result<(), CliError> {
    let value = match args.value.as_deref() {
        None => Value::Nil,
        Some(text) => {
            let stdin;
            let (text, what) = if text == "-" {
                let mut s = String::new();
                tokio::io::stdin()
                    .read_to_string(&mut s)
                    .await
                    .map_err(|e| CliError::io("cannot read the value from stdin", e))?;
                stdin = s;
                (stdin.as_str(), "the value read from stdin")
            } else {
                (text, "VALUE")
            };
            let j = json::parse(text, what).map_err(CliError::Usage)?;
            json::to_value(&j, Floats::from_flag(args.f64)).map_err(CliError::Usage)?
        }
    };
    let mut event = DynEvent::new(args.etype).value(value).reliable();
    if let Some(key) = args.key {
        event = event.key(key);
    }
    let client = connect::connect(common, |b| b).await?;
    // close() delivers it and waits for the server's confirmation, within
    // --close-timeout.
    let sent = client.send(&event).await.map_err(CliError::from);
    let closed = connect::close(&client).await;
    sent?;
    closed?;
    tracing::info!(etype = event.etype(), "sent");
    Ok(())
}
