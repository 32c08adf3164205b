//! Turning the global options into a connected [`VuerClient`], and reading
//! why a client stopped.

use std::time::Duration;

use vuer_client::{ClientBuilder, ConnectionState, Disconnect, Reconnect, Value, VuerClient};

use crate::cli::Common;
use crate::error::CliError;
use crate::json::{self, Floats};

/// The server URI: `--uri`, else `VUER_CLIENT_URI`, else the default.
pub fn uri(common: &Common) -> String {
    common
        .uri
        .clone()
        .or_else(|| std::env::var("VUER_CLIENT_URI").ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| vuer_client::DEFAULT_URI.to_owned())
}

/// A builder with the global options applied. Without `--reconnect`, a lost
/// connection closes the client (the command then exits with code 4).
pub fn builder(common: &Common) -> Result<ClientBuilder, CliError> {
    let mut b = VuerClient::builder()
        .uri(uri(common))
        .connect_timeout(Duration::from_secs_f64(common.connect_timeout.max(0.001)))
        .close_timeout(Duration::from_secs_f64(common.close_timeout.max(0.001)))
        .reconnect(common.reconnect.then(Reconnect::default));
    if common.insecure {
        b = b.tls_verify(false);
    }
    for field in &common.init_fields {
        let (name, value) = init_field(field)?;
        b = b.init_field(name, value);
    }
    Ok(b)
}

/// Connects with the global options, after `tune` adjusted the builder.
pub async fn connect(
    common: &Common,
    tune: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> Result<VuerClient, CliError> {
    let b = tune(builder(common)?);
    let client = b.connect().await?;
    tracing::info!(uri = client.uri(), "connected");
    Ok(client)
}

/// `NAME=VALUE`, VALUE as JSON or else as a plain string.
fn init_field(s: &str) -> Result<(String, Value), CliError> {
    let Some((name, text)) = s.split_once('=') else {
        return Err(CliError::Usage(format!(
            "--init-field {s:?}: expected NAME=VALUE"
        )));
    };
    if name.is_empty() {
        return Err(CliError::Usage(format!(
            "--init-field {s:?}: the name is empty"
        )));
    }
    let value = match serde_json::from_str(text) {
        Ok(j) => json::to_value(&j, Floats::F32)
            .map_err(|e| CliError::Usage(format!("--init-field {name}: {e}")))?,
        Err(_) => Value::from(text),
    };
    Ok((name.to_owned(), value))
}

/// Why the client stopped, once its inbound stream has ended: `Ok` for a
/// local close, else the reason as a [`CliError::Lost`].
pub fn ended(client: &VuerClient) -> Result<(), CliError> {
    match client.state() {
        ConnectionState::Closed(Disconnect::Local) => Ok(()),
        ConnectionState::Closed(reason) | ConnectionState::Disconnected(reason) => {
            Err(reason.into())
        }
        other => Err(CliError::Lost(format!("inbound stream ended ({other})"))),
    }
}

/// Closes the client; a close that is not clean is a lost connection.
pub async fn close(client: &VuerClient) -> Result<(), CliError> {
    client.close().await.map_err(CliError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_fields_take_json_or_plain_strings() {
        assert_eq!(
            init_field("client=rust-teleop").unwrap(),
            ("client".into(), Value::from("rust-teleop"))
        );
        assert_eq!(init_field("n=3").unwrap(), ("n".into(), Value::Int(3)));
        assert_eq!(
            init_field("s=\"3\"").unwrap(),
            ("s".into(), Value::from("3"))
        );
        assert_eq!(init_field("x").unwrap_err().exit_code(), 2);
        assert_eq!(init_field("=1").unwrap_err().exit_code(), 2);
    }
}
