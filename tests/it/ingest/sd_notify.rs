//! systemd integration through the real binary: with `NOTIFY_SOCKET` set,
//! spoold sends READY=1 once it serves, WATCHDOG=1 at half of WATCHDOG_USEC,
//! and STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::spoold::TEST_TOKEN;
use test_support::{bin_path, free_port};

/// Kills (SIGKILL) the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn ingest_sd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("t:{TEST_TOKEN}\n")).expect("tokens");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("spoold.log")).expect("log");
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's.
    let script = format!(
        "WATCHDOG_PID=$$ exec '{}' --tokens-file '{}' --spool-dir '{}' --listen 127.0.0.1:{port} --admin-socket ''",
        bin_path("spoold").display(),
        tokens.display(),
        dir.path().join("spool").display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("NOTIFY_SOCKET", &sock_path)
        // 400 ms: spoold must ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn spoold");
    let mut child = KillOnDrop(child);
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
        let watchdogs = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        if got.iter().any(|m| m.contains("READY=1")) && watchdogs >= 3 {
            break;
        }
    }
    let ready_at = got.iter().position(|m| m.contains("READY=1"));
    assert!(ready_at.is_some(), "no READY=1; got {got:?}");
    // READY means it serves: the listener is bound and the spool open.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "READY=1 before the listener was bound");
    assert!(got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "watchdog pings missing: {got:?}");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    let status = child.0.wait().expect("wait");
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
