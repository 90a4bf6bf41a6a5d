//! Real, unmodified `tailscaled` + `tailscale` (the pinned versions `.ci/install-tailscale`
//! builds): one daemon per node in userspace-networking mode with its own state dir, socket and
//! log, the test environment variables (no log upload, no port mapping, no default control,
//! plain-HTTP DERP unless a test CA is trusted, the trap as proxy), tied to the harness by
//! `TS_PARENT_DEATH_FD` and killed on drop; and the CLI commands the scenarios use, each with a
//! deadline.

use crate::wait_until;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client versions under test (the same list as `VERSIONS` in `.ci/install-tailscale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The newest release that builds here.
    Newest,
    /// The oldest we support: capability version 113.
    Oldest,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::Newest, Version::Oldest];

    pub fn tag(self) -> &'static str {
        match self {
            Version::Newest => "v1.102.5",
            Version::Oldest => "v1.80.3",
        }
    }

    /// `$HEADSCALE_TAILSCALE_DIR/<tag>`, else the install script's default cache.
    pub fn dir(self) -> PathBuf {
        let root = std::env::var_os("HEADSCALE_TAILSCALE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("HEADSCALE_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/headscale-rs")
                    });
                cache.join("tailscale")
            });
        root.join(self.tag())
    }

    /// Panics with what to run when the binaries are missing.
    pub fn check_installed(self) {
        for binary in ["tailscaled", "tailscale"] {
            let path = self.dir().join(binary);
            assert!(
                path.exists(),
                "{} is missing: run `bash .ci/install-tailscale` (needs Go) or set HEADSCALE_TAILSCALE_DIR",
                path.display()
            );
        }
    }
}

/// How a daemon is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `TS_DEBUG_NEVER_DIRECT_UDP=1`: all traffic through DERP.
    pub never_direct: bool,
    /// Serve SOCKS5 into the tailnet on a free loopback port.
    pub socks5: bool,
    /// The production path: trust this CA (`SSL_CERT_FILE`) and speak DERP over TLS
    /// (no `TS_DEBUG_USE_DERP_HTTP`).
    pub trust: Option<PathBuf>,
}

/// The result of one CLI command.
#[derive(Debug)]
pub struct Run {
    /// False on a non-zero exit and when the deadline killed the command.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} stdout={:?} stderr={:?}",
            self.ok,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// A CLI command running in the background (killed on drop).
pub struct Background {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    /// Waits up to `limit` for the command to end; kills it past that.
    pub fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let ok = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            ok,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Client {
    pub name: String,
    pub version: Version,
    pub socks_port: Option<u16>,
    options: Options,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// The write end of the `TS_PARENT_DEATH_FD` pipe: when the harness dies, the daemon
    /// reads EOF and exits.
    _parent_alive: Option<OwnedFd>,
    runs: std::cell::Cell<u32>,
}

impl Client {
    pub fn start(name: &str, version: Version, options: &Options) -> Client {
        version.check_installed();
        let dir = tempfile::tempdir().unwrap();
        let socks_port = options.socks5.then(crate::common::free_port);
        // TS_LOGS_DIR is only used if it exists; otherwise logs go to /var/lib/tailscale.
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let mut client = Client {
            name: name.to_string(),
            version,
            socks_port,
            options: options.clone(),
            dir,
            daemon: None,
            _parent_alive: None,
            runs: std::cell::Cell::new(0),
        };
        client.launch();
        client
    }

    /// Starts `tailscaled` on this client's state dir and waits until it answers.
    fn launch(&mut self) {
        let dir = self.dir.path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("tailscaled.log"))
            .unwrap();
        let (read, write) = pipe();
        let mut command = Command::new(self.version.dir().join("tailscaled"));
        command
            .arg("--tun=userspace-networking")
            .arg(format!("--statedir={}", dir.display()))
            .arg(format!("--socket={}", dir.join("ts.sock").display()))
            .arg("--port=0");
        if let Some(port) = self.socks_port {
            command.arg(format!("--socks5-server=127.0.0.1:{port}"));
        }
        environment(&mut command, dir);
        command.env("TS_PARENT_DEATH_FD", "3");
        if self.options.never_direct {
            command.env("TS_DEBUG_NEVER_DIRECT_UDP", "1");
        }
        if let Some(ca) = &self.options.trust {
            command
                .env("SSL_CERT_FILE", ca)
                .env_remove("TS_DEBUG_USE_DERP_HTTP");
        }
        let read_fd = read.as_raw_fd();
        unsafe {
            command.pre_exec(move || {
                if read_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(read_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        drop(read);
        self.daemon = Some(daemon);
        self._parent_alive = Some(write);
        wait_until(Duration::from_secs(20), "tailscaled to answer", || {
            self.check_alive();
            let run = self.run(&["status", "--json"], Duration::from_secs(5));
            run.ok.then_some(())
        });
    }

    /// SIGKILLs the daemon and starts it again on the same state (machine and node keys,
    /// prefs): what a crash or a reboot looks like to the server.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Panics (with the daemon's log) if the daemon has exited.
    pub fn check_alive(&self) {
        // waitid with WNOWAIT: look without reaping, so `Child` still owns the process.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let found = unsafe { libc::waitid(libc::P_PID, self.pid(), &mut info, flags) };
        let exited = found == 0 && unsafe { info.si_pid() } != 0;
        assert!(!exited, "tailscaled {} exited: {}", self.name, self.log());
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().id()
    }

    /// Starts `tailscale --socket=… ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.dir.path().join(format!("cli-{n}.out"));
        let err = self.dir.path().join(format!("cli-{n}.err"));
        let mut command = Command::new(self.version.dir().join("tailscale"));
        command
            .arg(format!(
                "--socket={}",
                self.dir.path().join("ts.sock").display()
            ))
            .args(args);
        environment(&mut command, self.dir.path());
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Background {
            child: Some(child),
            out,
            err,
        }
    }

    /// Runs `tailscale --socket=… ARGS`, killed after `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Run {
        self.spawn(args).finish(limit)
    }

    /// `up` against `login_server` with an auth key, in the background (`up` waits for
    /// Running, at most `timeout`).
    pub fn up(&self, login_server: &str, key: &str, timeout: Duration) -> Background {
        self.spawn(&[
            "up",
            // Exactly these settings: after a `logout`, some versions (1.80) otherwise
            // refuse an `up` that does not restate every non-default preference.
            "--reset",
            &format!("--login-server={login_server}"),
            &format!("--auth-key={key}"),
            &format!("--hostname={}", self.name),
            &format!("--timeout={}s", timeout.as_secs()),
        ])
    }

    /// `status --json`.
    pub fn status(&self) -> serde_json::Value {
        let run = self.run(&["status", "--json"], Duration::from_secs(10));
        assert!(run.ok, "{}: status --json failed: {run}", self.name);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{}: status is not JSON ({e}): {run}", self.name))
    }

    /// `BackendState` from `status --json`.
    pub fn backend_state(&self) -> String {
        self.status()["BackendState"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `BackendState` is `want`.
    pub fn wait_state(&self, want: &str, limit: Duration) {
        wait_until(limit, &format!("{} to be {want}", self.name), || {
            (self.backend_state() == want).then_some(())
        });
    }

    /// This node's first Tailscale IPv4 from `status --json`.
    pub fn ipv4(&self) -> String {
        let status = self.status();
        status["TailscaleIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str())
            .find(|ip| ip.contains('.'))
            .unwrap_or_else(|| panic!("{} has no IPv4: {status}", self.name))
            .to_string()
    }

    /// The last lines of the daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tailscaled.log")).unwrap_or_default()
    }

    /// Stops the daemon (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::print_tail(
                &format!("tailscaled {} ({}) log", self.name, self.version.tag()),
                &self.log(),
            );
        }
        self.kill();
    }
}

/// The environment of every daemon and CLI run: nothing leaves, nothing is uploaded.
fn environment(command: &mut Command, dir: &Path) {
    let trap = &crate::trap().url;
    command
        .env("TS_NO_LOGS_NO_SUPPORT", "true")
        .env("TS_DISABLE_PORTMAPPER", "1")
        .env("TS_ASSUME_NETWORK_UP_FOR_TEST", "1")
        .env("TS_PANIC_IF_HIT_MAIN_CONTROL", "1")
        .env("TS_DEBUG_USE_DERP_HTTP", "1")
        .env("TS_LOGS_DIR", dir.join("logs"))
        .env("HTTP_PROXY", trap)
        .env("HTTPS_PROXY", trap)
        .env("http_proxy", trap)
        .env("https_proxy", trap)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("SSH_CLIENT")
        .env_remove("SSH_CONNECTION");
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
