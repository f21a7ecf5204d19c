//! Runs Debian's nginx (installed by .ci/run) in the foreground with a config of the test's own, on a free port.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// A running nginx; stopped on drop.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

/// Where nginx is, if it is installed.
pub fn binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

impl Nginx {
    /// Starts nginx with `http_block` (what goes inside `http { }`, listening on `port`).
    pub async fn start(port: u16, http_block: &str) -> Nginx {
        let bin = binary().expect("nginx is not installed (apt-get install nginx; .ci/run does this)");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().display().to_string();
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    {http_block}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, _dir: dir, port };
        super::wait_for_port(port).await;
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What nginx has logged at `warn` and above.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
