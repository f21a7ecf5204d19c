//! Real web frameworks' method override, as upstreams: Rack's (Rails) and Symfony's (Laravel, Symfony), from
//! Debian's packages (installed by .ci/run), and Express's method-override (Express 5 and 4, multipart by multer, from npm:
//! tests/apps/express/package-lock.json), and Go's net/http under gorilla/handlers' override (Debian's golang-go),
//! each answering the method it took a request as.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// A framework app on a free loopback port; stopped on drop.
pub struct FrameworkApp {
    pub name: &'static str,
    child: Child,
    pub port: u16,
}

impl FrameworkApp {
    /// Rack 2's `Rack::MethodOverride` on WEBrick; `None` (the test says what to install) without Ruby and Rack.
    pub async fn rack() -> Option<FrameworkApp> {
        let loads = Command::new("ruby")
            .args(["-e", "require 'rack'; require 'webrick'"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Its gem's path carries its version: asked of Ruby itself, with the usual word when it is missing.
        if !loads && !super::have_tool("Ruby with Rack and WEBrick", &[], "ruby-rack ruby-webrick") {
            return None;
        }
        let port = super::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/rack_method_override.rb");
        let mut command = Command::new("ruby");
        command.arg(script).arg(port.to_string());
        Some(Self::spawn("rack", command, port).await)
    }

    /// Symfony's HttpFoundation under `php -S`; `None` without PHP and the package.
    pub async fn symfony() -> Option<FrameworkApp> {
        let autoload = "/usr/share/php/Symfony/Component/HttpFoundation/autoload.php";
        if !super::have_tool("php", &["/usr/bin/php"], "php-cli php-symfony-http-foundation")
            || !super::have_tool("Symfony HttpFoundation", &[autoload], "php-symfony-http-foundation")
        {
            return None;
        }
        let port = super::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/symfony_method_override.php");
        let mut child = Command::new("php");
        child.arg("-S").arg(format!("127.0.0.1:{port}")).arg(script);
        Some(Self::spawn("symfony", child, port).await)
    }

    /// Express `major` (5 or 4) with method-override and body-parser, on Node.js; its npm dependencies are installed
    /// on first use.
    pub async fn express(major: u8) -> FrameworkApp {
        static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/express");
        INSTALLED.get_or_init(|| super::idp::npm_ci(&dir, "multer").unwrap_or_else(|e| panic!("{e}")));
        let port = super::free_port();
        let mut command = Command::new("node");
        command
            .arg(dir.join("method_override.js"))
            .arg(port.to_string())
            .arg(major.to_string());
        let name = if major == 4 { "express4" } else { "express" };
        Self::spawn(name, command, port).await
    }

    /// net/http's form reading under gorilla/handlers' method override (`tests/apps/go/`), built with Debian's Go
    /// once per test process; `None` without Go.
    pub async fn go() -> Option<FrameworkApp> {
        if !super::have_tool("Go", &["/usr/bin/go"], "golang-go") {
            return None;
        }
        static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let binary = BUILT.get_or_init(|| {
            let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-method-override");
            let status = Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/go/method_override.go"))
                .env("GOCACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/go-cache"))
                .env("GOPATH", concat!(env!("CARGO_TARGET_TMPDIR"), "/go-path"))
                .env("GO111MODULE", "off")
                .status()
                .unwrap_or_else(|e| panic!("run go build: {e}"));
            assert!(status.success(), "go build of tests/apps/go failed: {status}");
            out
        });
        let port = super::free_port();
        let mut command = Command::new(binary);
        command.arg(port.to_string());
        Some(Self::spawn("go", command, port).await)
    }

    async fn spawn(name: &'static str, mut command: Command, port: u16) -> FrameworkApp {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} app: {e}"));
        let app = FrameworkApp { name, child, port };
        super::wait_for_port(port).await;
        app
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FrameworkApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
