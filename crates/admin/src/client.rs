//! The client end of the admin socket: one connection, requests in turn.

use std::path::Path;

use common::admin::{AdminRequest, AdminResponse, ADMIN_LINE_BYTES_MAX};
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
    /// Connects to the admin socket at `path`.
    pub async fn connect(path: &Path) -> Result<Client, AdminError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AdminError::Io { path: path.display().to_string(), source })?;
        let (rd, writer) = stream.into_split();
        Ok(Client { reader: BufReader::new(rd), writer })
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
