//! Child processes of the real binaries.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`spoold`, `ledgerd`, `spoolctl`), found next to
/// the running executable: `target/<profile>/deps/..` for a test, the same
/// directory for a binary such as the bench (`target/release/bench`). It follows
/// `CARGO_TARGET_DIR`, since the executable itself lives there. `cargo test
/// --workspace` builds every binary before it runs any test; the bench needs
/// `cargo build --release --workspace --bins` first.
pub fn bin_path(name: &str) -> PathBuf {
    match find_bin(name) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`bin_path`], but an error instead of a panic when the binary is missing.
pub fn find_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or_else(|| anyhow::anyhow!("{} has no parent dir", exe.display()))?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "binary {} not found; build the workspace first with the same profile \
         (cargo build --workspace, or cargo build --release --workspace --bins for the bench)",
        path.display()
    );
    Ok(path)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    wait_http_ok_with(&client, url, timeout).await
}

/// [`wait_http_ok`] with a given client (one that trusts a test CA).
pub async fn wait_http_ok_with(client: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running daemon. Killed with SIGKILL when dropped, so a failing test never
/// leaves processes behind.
#[derive(Debug)]
pub struct DaemonProcess {
    pub child: Child,
    pub name: String,
}

impl DaemonProcess {
    /// Starts `bin` with `args`; its stderr goes to `log` (kept for post-mortems).
    pub fn spawn(bin: &str, args: &[String], log: &std::path::Path) -> anyhow::Result<DaemonProcess> {
        DaemonProcess::spawn_env(bin, args, &[], log)
    }

    /// [`DaemonProcess::spawn`] with extra environment variables (e.g.
    /// `FAILPOINTS` for a daemon built with the `failpoints` feature).
    pub fn spawn_env(
        bin: &str,
        args: &[String],
        env: &[(String, String)],
        log: &std::path::Path,
    ) -> anyhow::Result<DaemonProcess> {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(find_bin(bin)?)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .env_remove("NOTIFY_SOCKET")
            .spawn()?;
        Ok(DaemonProcess { child, name: bin.to_owned() })
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (via the `kill` command, to keep this crate free of unsafe),
    /// then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait_exit(timeout).map_err(|e| e.context("after SIGTERM"))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit by itself; kills it and
    /// fails if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                anyhow::bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}
