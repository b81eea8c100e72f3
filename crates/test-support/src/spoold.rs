//! A real `spoold` for tests: writes a config and a tokens file into a temp
//! dir, starts the binary on a free loopback port, waits for `/readyz`.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::process::{free_port, wait_http_ok_with, DaemonProcess};
use crate::tls::{Connector, TestCa};

/// The bearer secret every test spoold accepts (token name `test-client`).
pub const TEST_TOKEN: &str = "test-secret-0123456789abcdef";
/// A second valid token, to check that any listed token works.
pub const TEST_TOKEN_2: &str = "other-secret-0123456789abcdef";

/// What to put in the config besides the basics (node id, listen address,
/// spool dir, tokens file, admin socket). Each string is one `key = value` line.
#[derive(Debug, Clone, Default)]
pub struct SpooldOptions {
    /// Lines for `[spool]` (besides `dir`).
    pub spool: Vec<String>,
    /// Lines for `[limits]`.
    pub limits: Vec<String>,
    /// Lines for `[ledger]`.
    pub ledger: Vec<String>,
    /// Lines for `[retry]`.
    pub retry: Vec<String>,
    /// Where the spool lives; default `<tempdir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Extra command-line flags.
    pub args: Vec<String>,
    /// Forward to these ledgers with this bearer secret (written to
    /// `<tempdir>/ledger.token`); sets `[ledger] urls` and `token_file`.
    pub forward_to: Option<(Vec<String>, String)>,
    /// Extra environment of every (re)start, e.g. `FAILPOINTS`.
    pub env: Vec<(String, String)>,
    /// Serve over TLS with a certificate from a fresh test CA
    /// (`[listen] tls_cert` / `tls_key`); [`Spoold::url`] is then `https://`.
    pub tls: bool,
}

impl SpooldOptions {
    pub fn spool(mut self, line: &str) -> Self {
        self.spool.push(line.to_owned());
        self
    }

    pub fn limits(mut self, line: &str) -> Self {
        self.limits.push(line.to_owned());
        self
    }

    pub fn ledger(mut self, line: &str) -> Self {
        self.ledger.push(line.to_owned());
        self
    }

    pub fn retry(mut self, line: &str) -> Self {
        self.retry.push(line.to_owned());
        self
    }

    /// An environment variable for every (re)start.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serve over TLS (see [`SpooldOptions::tls`]) if `on`.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Forward to `url` with bearer `token`.
    pub fn forward_to(mut self, url: &str, token: &str) -> Self {
        self.forward_to = Some((vec![url.to_owned()], token.to_owned()));
        self
    }
}

/// A running spoold and its files. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Spoold {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config_path: PathBuf,
    pub spool_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub log_path: PathBuf,
    pub process: Option<DaemonProcess>,
    /// The extra flags of every (re)start ([`SpooldOptions::args`], or those
    /// given to [`Spoold::restart_with`]).
    pub args: Vec<String>,
    /// The extra environment of every (re)start ([`SpooldOptions::env`]).
    pub env: Vec<(String, String)>,
    /// With [`SpooldOptions::tls`]: the PEM of the CA that signed spoold's
    /// certificate (for `localhost` and `127.0.0.1`).
    pub tls_ca_pem: Option<String>,
}

impl Spoold {
    /// Writes the files and starts spoold; returns once `/readyz` answers 200.
    pub async fn start(opts: SpooldOptions) -> anyhow::Result<Spoold> {
        let dir = tempfile::Builder::new().prefix("spoold-test").tempdir()?;
        let port = free_port();
        let spool_dir = opts.spool_dir.clone().unwrap_or_else(|| dir.path().join("spool"));
        let tokens = dir.path().join("spoold.tokens");
        std::fs::write(&tokens, format!("# test tokens\ntest-client:{TEST_TOKEN}\nother:{TEST_TOKEN_2}\n"))?;
        let admin_socket = dir.path().join("admin.sock");
        let (mut tls_lines, mut tls_ca_pem) = (String::new(), None);
        if opts.tls {
            let ca = TestCa::new("spoold");
            let (cert, key) = ca.server().write(dir.path(), "spoold");
            tls_lines = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
            tls_ca_pem = Some(ca.pem());
        }
        let mut text = format!(
            "node_id = \"test-node\"\n\n[listen]\naddr = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n{tls_lines}\n\
             [auth]\ntokens_file = \"{}\"\n\n[spool]\ndir = \"{}\"\n",
            admin_socket.display(),
            tokens.display(),
            spool_dir.display()
        );
        for l in &opts.spool {
            text.push_str(l);
            text.push('\n');
        }
        let mut ledger = opts.ledger.clone();
        if let Some((urls, token)) = &opts.forward_to {
            let token_file = dir.path().join("ledger.token");
            std::fs::write(&token_file, format!("{token}\n"))?;
            ledger.push(format!("urls = {urls:?}"));
            ledger.push(format!("token_file = \"{}\"", token_file.display()));
        }
        for (name, lines) in [("limits", &opts.limits), ("ledger", &ledger), ("retry", &opts.retry)] {
            if !lines.is_empty() {
                text.push_str(&format!("\n[{name}]\n"));
                for l in lines {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        let config_path = dir.path().join("spoold.toml");
        std::fs::write(&config_path, text)?;
        let log_path = dir.path().join("spoold.log");
        let mut s = Spoold {
            dir,
            port,
            config_path,
            spool_dir,
            admin_socket,
            log_path,
            process: None,
            args: opts.args.clone(),
            env: opts.env.clone(),
            tls_ca_pem,
        };
        s.spawn().await?;
        Ok(s)
    }

    fn command_args(&self, extra: &[String]) -> Vec<String> {
        let mut args = vec!["--config".to_owned(), self.config_path.display().to_string()];
        args.extend_from_slice(extra);
        args
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let args = self.command_args(&self.args);
        let mut p = DaemonProcess::spawn_env("spoold", &args, &self.env, &self.log_path)?;
        let client = self.client_builder().timeout(Duration::from_secs(2)).build()?;
        let ready = wait_http_ok_with(&client, &self.url("/readyz"), Duration::from_secs(30)).await;
        if let Err(e) = ready {
            let running = p.is_running();
            p.kill9();
            anyhow::bail!("spoold not ready (running: {running}): {e}\n--- log ---\n{}", self.log());
        }
        self.process = Some(p);
        Ok(())
    }

    /// Starts spoold again with the same config and flags (after a kill or a
    /// stop; a still running process is killed first).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            if p.is_running() {
                p.kill9();
            }
        }
        self.spawn().await
    }

    /// Like [`Spoold::restart`], with `args` as the extra flags from now on
    /// (flags override config keys: a config change across a restart).
    pub async fn restart_with(&mut self, args: &[String]) -> anyhow::Result<()> {
        self.args = args.to_vec();
        self.restart().await
    }

    /// Runs spoold with the same config and environment and `extra` flags
    /// until it exits by itself (a start that must be refused), within
    /// `timeout`: its exit status and what it printed.
    pub fn run_to_exit(&mut self, extra: &[String], timeout: Duration) -> anyhow::Result<(ExitStatus, String)> {
        if let Some(mut p) = self.process.take() {
            if p.is_running() {
                p.kill9();
            }
        }
        let out_path = self.dir.path().join("refused.log");
        let _ = std::fs::remove_file(&out_path);
        let mut p = DaemonProcess::spawn_env("spoold", &self.command_args(extra), &self.env, &out_path)?;
        let status = p.wait_exit(timeout)?;
        Ok((status, std::fs::read_to_string(&out_path).unwrap_or_default()))
    }

    /// `http://127.0.0.1:<port><path>` (`https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls_ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// A client builder for this spoold: with TLS, it trusts spoold's test CA.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        match &self.tls_ca_pem {
            Some(ca) => crate::tls::client_builder(ca, None),
            None => reqwest::Client::builder(),
        }
    }

    /// How to open a raw connection to this spoold (TLS handshake done, if TLS).
    pub fn connector(&self) -> Connector {
        match &self.tls_ca_pem {
            Some(ca) => Connector::tls(ca),
            None => Connector::plain(),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL now.
    pub fn kill9(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill9();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match self.process.as_mut() {
            Some(p) => p.terminate(timeout),
            None => anyhow::bail!("spoold is not running"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().map(|p| p.is_running()).unwrap_or(false)
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
