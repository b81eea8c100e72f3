//! The client end of the admin socket: one connection, requests in turn.

use std::path::Path;

use common::admin::{codes, AdminRequest, AdminResponse, ADMIN_LINE_BYTES_MAX, ADMIN_PROTOCOL_VERSION};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::server::{read_line, Line};
use crate::AdminError;

/// A connection to a daemon's admin socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the admin socket at `path` and says `hello`: a daemon that
    /// speaks another protocol version is an [`AdminError::VersionMismatch`]
    /// naming both versions.
    pub async fn connect(path: &Path) -> Result<Client, AdminError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AdminError::Io { path: path.display().to_string(), source })?;
        let (rd, writer) = stream.into_split();
        let mut client = Client { reader: BufReader::new(rd), writer };
        let hello = AdminRequest::Hello {
            protocol: ADMIN_PROTOCOL_VERSION,
            client: format!("spoolctl {}", env!("CARGO_PKG_VERSION")),
        };
        let resp = client.call(&hello).await?;
        if resp.ok {
            return Ok(client);
        }
        let msg = resp.error.unwrap_or_default();
        match resp.code.as_deref() {
            Some(codes::VERSION_MISMATCH) => Err(AdminError::VersionMismatch(msg)),
            Some(codes::BUSY) => Err(AdminError::Protocol(msg)),
            // A daemon from before versioning knows no `hello`.
            _ if msg.contains("hello") => Err(AdminError::VersionMismatch(format!(
                "admin protocol mismatch: this spoolctl speaks version {ADMIN_PROTOCOL_VERSION}, the spoold at {} \
                 speaks version 1 (unversioned, older than this spoolctl); use the spoolctl of the same release as spoold",
                path.display()
            ))),
            _ => Err(AdminError::Protocol(format!("hello refused: {msg}"))),
        }
    }

    /// Sends one request and waits for its response.
    pub async fn call(&mut self, req: &AdminRequest) -> Result<AdminResponse, AdminError> {
        let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Protocol(format!("encode request: {e}")))?;
        if line.len() > ADMIN_LINE_BYTES_MAX {
            return Err(AdminError::Protocol(format!(
                "request of {} bytes is over the {ADMIN_LINE_BYTES_MAX}-byte line limit",
                line.len()
            )));
        }
        line.push(b'\n');
        let io = |source| AdminError::Io { path: "admin socket".into(), source };
        self.writer.write_all(&line).await.map_err(io)?;
        match read_line(&mut self.reader, ADMIN_LINE_BYTES_MAX).await.map_err(io)? {
            Line::Request(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AdminError::Protocol(format!("bad response: {e}"))),
            Line::TooLong => Err(AdminError::Protocol("response line too long".into())),
            Line::Eof => Err(AdminError::Protocol("the daemon closed the admin connection".into())),
        }
    }
}
