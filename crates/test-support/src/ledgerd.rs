//! A real `ledgerd` child process for tests: its own store directory (or a
//! given store URL), a tokens file with one token per role, a loopback port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{free_port, wait_http_ok, DaemonProcess};

/// Token of the edge-node role.
pub const NODE_TOKEN: &str = "node-token-0123456789abcdef";
/// Token of the admin role.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// Token of a merchant bound to [`MERCHANT_PAYEE`].
pub const MERCHANT_TOKEN: &str = "merchant-token-0123456789abcdef";
pub const MERCHANT_PAYEE: &str = "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b";
/// Token of a second merchant, bound to [`MERCHANT_B_PAYEE`]: what one
/// merchant must never see of the other's purchases.
pub const MERCHANT_B_TOKEN: &str = "merchant-b-token-0123456789abcdef";
pub const MERCHANT_B_PAYEE: &str = "7e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b";

/// A running ledgerd. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Ledgerd {
    pub process: Option<DaemonProcess>,
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub store_url: String,
    /// Extra TOML (e.g. a `[limits]` table) written to `ledgerd.toml`.
    pub extra_config: String,
    /// Holds the store (for sled), the tokens file and the log.
    pub dir: PathBuf,
    /// Extra flags and environment of every (re)start (e.g. `FAILPOINTS`).
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The binary, next to the test or bench executable (`ledgerd`; the bench
    /// may run an earlier build under another name for a before/after).
    pub bin: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Ledgerd {
    /// Starts ledgerd on a sled store in a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Ledgerd> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let store_url = format!("sled://{}", dir.join("store").display());
        let mut l = Ledgerd::start_with(&dir, &store_url, free_port()).await?;
        l._tmp = Some(tmp);
        Ok(l)
    }

    /// Starts ledgerd with `store_url`, keeping its files in `dir`, on `port`.
    pub async fn start_with(dir: &Path, store_url: &str, port: u16) -> anyhow::Result<Ledgerd> {
        Ledgerd::start_with_config(dir, store_url, port, "").await
    }

    /// Like [`Ledgerd::start_with`], with extra TOML in its config file.
    pub async fn start_with_config(dir: &Path, store_url: &str, port: u16, extra_config: &str) -> anyhow::Result<Ledgerd> {
        Ledgerd::start_bin(dir, store_url, port, extra_config, "ledgerd").await
    }

    /// Like [`Ledgerd::start_with_config`], running the binary `bin` (a file
    /// name next to the running executable, see [`crate::process::find_bin`]).
    pub async fn start_bin(dir: &Path, store_url: &str, port: u16, extra_config: &str, bin: &str) -> anyhow::Result<Ledgerd> {
        std::fs::create_dir_all(dir)?;
        let tokens = dir.join("ledgerd.tokens");
        std::fs::write(
            &tokens,
            format!(
                "front:{NODE_TOKEN}:node\nops:{ADMIN_TOKEN}:admin\nshop:{MERCHANT_TOKEN}:merchant:{MERCHANT_PAYEE}\n\
                 shop-b:{MERCHANT_B_TOKEN}:merchant:{MERCHANT_B_PAYEE}\n"
            ),
        )?;
        let mut l = Ledgerd {
            process: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            store_url: store_url.to_owned(),
            extra_config: extra_config.to_owned(),
            dir: dir.to_path_buf(),
            extra_args: Vec::new(),
            env: Vec::new(),
            bin: bin.to_owned(),
            _tmp: None,
        };
        l.spawn().await?;
        Ok(l)
    }

    fn args(&self) -> Vec<String> {
        let config = self.dir.join("ledgerd.toml");
        let _ = std::fs::write(&config, &self.extra_config);
        vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
            "--store".into(),
            self.store_url.clone(),
            "--tokens-file".into(),
            self.dir.join("ledgerd.tokens").display().to_string(),
        ]
        .into_iter()
        .chain(self.extra_args.iter().cloned())
        .collect()
    }

    /// Starts the process (again) and waits for `/healthz`.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let p = DaemonProcess::spawn_env(&self.bin, &self.args(), &self.env, &self.dir.join("ledgerd.log"))?;
        self.process = Some(p);
        wait_http_ok(&format!("{}/healthz", self.url), Duration::from_secs(20)).await
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// SIGTERM and wait.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        match self.process.take() {
            Some(mut p) => p.terminate(Duration::from_secs(20)),
            None => anyhow::bail!("not running"),
        }
    }

    /// The log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ledgerd.log")).unwrap_or_default()
    }

    fn client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
    }

    /// `GET /v1/events/{id}` as admin: the stored event, or `None` on 404.
    pub async fn get_event(&self, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let r = Self::client()?.get(format!("{}/v1/events/{id}", self.url)).bearer_auth(ADMIN_TOKEN).send().await?;
        match r.status().as_u16() {
            200 => Ok(Some(r.json().await?)),
            404 => Ok(None),
            s => anyhow::bail!("GET /v1/events/{id}: {s}"),
        }
    }

    /// Every stored event, as admin, paging through `GET /v1/events`.
    pub async fn all_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let client = Self::client()?;
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let r = client
                .get(format!("{}/v1/events?after={after}&limit=1000", self.url))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "GET /v1/events: {}", r.status());
            let page: serde_json::Value = r.json().await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            out.extend(events);
            match page["next_after"].as_u64() {
                Some(n) => after = n,
                None => return Ok(out),
            }
        }
    }
}

impl Drop for Ledgerd {
    fn drop(&mut self) {
        self.kill9();
    }
}
