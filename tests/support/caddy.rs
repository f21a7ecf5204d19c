//! Runs Debian's Caddy (installed by .ci/run) in the foreground with a Caddyfile of the test's own, on a free port:
//! no admin endpoint, no automatic HTTPS, its data and configuration directories in a temporary directory.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// Where Caddy is installed.
pub const PATHS: [&str; 2] = ["/usr/bin/caddy", "/usr/local/bin/caddy"];

/// A running Caddy; stopped on drop.
pub struct Caddy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Caddy {
    /// Starts Caddy with `site` (a Caddyfile's site blocks and named matchers, listening on `port`), after global
    /// options that keep it to the test: no admin endpoint, no certificates, errors only in its log.
    pub async fn start(port: u16, site: &str) -> Caddy {
        let bin = PATHS
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .expect("caddy is not installed (apt-get install caddy; .ci/run does this)");
        let dir = tempfile::tempdir().expect("tempdir");
        let caddyfile = format!("{{\n\tadmin off\n\tauto_https off\n\tlog {{\n\t\tlevel ERROR\n\t}}\n}}\n\n{site}");
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, caddyfile).expect("write Caddyfile");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("caddy.log");
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start caddy");
        let mut caddy = Caddy { child, dir, port };
        // Bounded: until Caddy listens, or says why it stopped (a Caddyfile it refused).
        let deadline = tokio::time::Instant::now() + super::READY_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = caddy.child.try_wait() {
                panic!("caddy exited ({status}):\n{}", caddy.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "caddy does not listen on port {port}:\n{}",
                caddy.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        caddy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Caddy has logged (errors, and its own start-up refusals).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
