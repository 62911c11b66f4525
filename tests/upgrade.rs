//! Zero-downtime operation of `stepgate serve`: a new process takes the
//! listening sockets over while a load generator runs, without one failed
//! request, and a gateway told to stop finishes the request in flight and
//! exits as soon as it is done. The test plays systemd: it holds the
//! notification socket the processes report to.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use common::{browser_headers, form_value, free_port, session_cookie, users_file, ALICE, ALICE_PASSWORD};

/// The bound on what should take a second or two, for a busy machine.
const SLOW: Duration = Duration::from_secs(30);

/// The app behind the gateway: counts the requests it answers, and answers
/// `/public/held` only when the test releases it.
struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
}

#[derive(Default)]
struct AppState {
    served: AtomicUsize,
    held_arrived: Notify,
    release_held: Notify,
}

impl App {
    async fn start() -> Self {
        let state = Arc::new(AppState::default());
        let router = axum::Router::new().route("/public/held", axum::routing::get(held)).fallback(counted).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, state }
    }

    fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Waits until the app has answered `more` requests after `since`.
    async fn wait_for_served(&self, since: usize, more: usize, what: &str) {
        let deadline = Instant::now() + SLOW;
        while self.served() < since + more {
            assert!(Instant::now() < deadline, "{what}: only {} requests reached the app", self.served() - since);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn counted(State(state): State<Arc<AppState>>) -> &'static str {
    state.served.fetch_add(1, Ordering::SeqCst);
    "ok\n"
}

async fn held(State(state): State<Arc<AppState>>) -> &'static str {
    state.held_arrived.notify_one();
    state.release_held.notified().await;
    "finished\n"
}

/// A gateway's directory (configuration, users, data, the private
/// directory of the upgrade socket), its address, the app behind it, and
/// the systemd notification socket its processes report to.
struct Site {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    app: App,
    systemd: UnixDatagram,
    master_key: String,
    /// The admin API's address, which the new process shares while the old
    /// one still runs.
    admin: SocketAddr,
}

impl Site {
    async fn new(shutdown_grace: &str) -> Self {
        let app = App::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::DirBuilder::new().mode(0o700).create(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("users.toml"), users_file()).unwrap();
        let addr = free_port();
        let admin = free_port();
        let config = format!(
            "users_file = \"users.toml\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [server]\nlisten = \"{addr}\"\ndata_dir = \"data\"\nthreads = 2\n\
             shutdown_grace = \"{shutdown_grace}\"\nupgrade_socket = \"{socket}\"\n\
             [logging]\nlevel = \"info,stepgate::access=warn\"\n\
             [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\n\
             [[apps.rules]]\npath = \"/public/\"\npolicy = \"bypass\"\n\
             [[apps.rules]]\npath = \"/\"\npolicy = \"one_factor\"\n",
            socket = dir.path().join("run/upgrade.sock").display(),
            upstream = app.addr,
        );
        std::fs::write(dir.path().join("stepgate.toml"), config).unwrap();
        let systemd = UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
        systemd.set_read_timeout(Some(SLOW)).unwrap();
        Self { dir, addr, admin, app, systemd, master_key: stepgate::crypto::generate_master_key() }
    }

    fn upgrade_socket(&self) -> PathBuf {
        self.dir.path().join("run/upgrade.sock")
    }

    /// `stepgate serve` on this site's configuration, as systemd would run it.
    fn command(&self, upgrade: bool) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stepgate"));
        command.args(["serve", "--config"]).arg(self.dir.path().join("stepgate.toml"));
        if upgrade {
            command.arg("--upgrade");
        }
        command
            .env(stepgate::crypto::ENCRYPTION_KEY_ENV, &self.master_key)
            .env(stepgate::systemd::NOTIFY_SOCKET_ENV, self.dir.path().join("notify.sock"))
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        command
    }

    /// Starts `stepgate serve`, its standard error in `NAME.log`.
    fn serve(&self, name: &str, upgrade: bool) -> Gateway {
        let log = self.dir.path().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = self.command(upgrade).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        let pid = child.id().unwrap();
        Gateway { child, pid, log }
    }

    /// The next notification, if one comes within the bound.
    async fn notification(&self) -> Option<String> {
        let systemd = self.systemd.try_clone().unwrap();
        tokio::task::spawn_blocking(move || {
            let mut buffer = [0u8; 512];
            let length = systemd.recv(&mut buffer).ok()?;
            Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
        })
        .await
        .unwrap()
    }

    /// A notification already waiting, if any; the socket stays
    /// non-blocking after this.
    fn notification_waiting(&self) -> Option<String> {
        self.systemd.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 512];
        let length = self.systemd.recv(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
    }

    /// Waits for `gateway` to tell systemd that it serves, as the
    /// service's main process.
    async fn wait_until_ready(&self, gateway: &Gateway) {
        let expected = format!("READY=1\nMAINPID={}", gateway.pid);
        assert_eq!(self.notification().await, Some(expected), "{}", gateway.log());
    }

    /// Waits until the new process listens on the upgrade socket.
    async fn wait_for_upgrade_socket(&self, new: &mut Gateway) {
        let deadline = Instant::now() + SLOW;
        while !std::fs::symlink_metadata(self.upgrade_socket()).is_ok_and(|m| m.file_type().is_socket()) {
            if let Some(status) = new.child.try_wait().unwrap() {
                panic!("the new process ended ({status}) before waiting for the sockets:\n{}", new.log());
            }
            assert!(Instant::now() < deadline, "no upgrade socket:\n{}", new.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a new connection to the gateway is refused.
    async fn wait_until_refused(&self) {
        let deadline = Instant::now() + SLOW;
        loop {
            match tokio::net::TcpStream::connect(self.addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => assert!(Instant::now() < deadline, "the gateway still accepts connections"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://app.test:{}{path}", self.addr.port())
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve("app.test", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .default_headers(browser_headers())
            .timeout(SLOW)
            .build()
            .unwrap()
    }

    /// Signs Alice in on the real pages; her session cookie, `name=value`.
    async fn sign_in(&self) -> String {
        let client = self.client();
        let page = client.get(self.url("/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
        let csrf = form_value(&page, "csrf");
        let form = [("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")];
        let response = client.post(self.url("/.stepgate/signin")).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 303, "signed in");
        session_cookie(&response)
    }

    /// The status of `GET /` (one factor needed) with this cookie, or none.
    async fn status_of_home(&self, cookie: Option<&str>) -> u16 {
        let mut request = self.client().get(self.url("/"));
        if let Some(cookie) = cookie {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        request.send().await.unwrap().status().as_u16()
    }
}

/// A `stepgate serve` process, killed when dropped.
struct Gateway {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// How the process ended, waited for within the bound.
    async fn exit_status(&mut self) -> ExitStatus {
        match tokio::time::timeout(SLOW, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the gateway did not exit:\n{}", self.log()),
        }
    }
}

fn send_signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// wrk (Debian's, which `scripts/setup` installs) on the signed-in route,
/// on eight keep-alive connections, until it is interrupted.
fn start_wrk(site: &Site, cookie: &str) -> Child {
    Command::new("wrk")
        .args(["--threads", "2", "--connections", "8", "--duration", "5m", "--timeout", "10s"])
        .args(["--header", "Host: app.test", "--header", &format!("Cookie: {cookie}")])
        .arg(format!("http://{}/", site.addr))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): scripts/setup installs it"))
}

/// Interrupts wrk, which then reports; its report.
async fn wrk_report(wrk: Child) -> String {
    send_signal(wrk.id().expect("wrk still runs"), "INT");
    let output = tokio::time::timeout(SLOW, wrk.wait_with_output()).await.expect("wrk reports").unwrap();
    assert!(output.status.success(), "wrk: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_under_load_without_a_failed_request() {
    let site = Site::new("30s").await;
    let mut old = site.serve("old", false);
    site.wait_until_ready(&old).await;
    let cookie = site.sign_in().await;
    assert_eq!(site.status_of_home(Some(&cookie)).await, 200);

    let before_load = site.app.served();
    let wrk = start_wrk(&site, &cookie);
    site.app.wait_for_served(before_load, 100, "wrk through the old process").await;

    let mut new = site.serve("new", true);
    site.wait_for_upgrade_socket(&mut new).await;
    old.signal("QUIT");
    site.wait_until_ready(&new).await;
    let status = old.exit_status().await;
    assert!(status.success(), "the old process ends cleanly once its requests are done: {status}\n{}", old.log());
    let after_old = site.app.served();
    site.app.wait_for_served(after_old, 100, "wrk through the new process").await;

    let report = wrk_report(wrk).await;
    assert!(!report.contains("Socket errors"), "connections failed during the hand-over:\n{report}");
    assert!(!report.contains("Non-2xx or 3xx responses"), "requests failed during the hand-over:\n{report}");
    let requests: usize = regex::Regex::new(r"(\d+) requests in")
        .unwrap()
        .captures(&report)
        .and_then(|found| found[1].parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{report}"));
    assert!(requests >= 200, "{report}");

    // The new process shares the data directory: the same session store
    // and signing keys, so Alice is still signed in.
    assert_eq!(site.status_of_home(Some(&cookie)).await, 200, "{}", new.log());
    assert_ne!(site.status_of_home(None).await, 200, "the route needs the session");
    // After a hand-over the service is not stopping: the old process must
    // not have said so.
    assert_eq!(site.notification_waiting(), None);
    let document = reqwest::get(format!("http://{}/openapi.json", site.admin)).await.unwrap();
    assert_eq!(document.status(), 200, "the new process serves the admin API: {}", new.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_then_exits() {
    let site = Site::new("60s").await;
    let mut gateway = site.serve("gateway", false);
    site.wait_until_ready(&gateway).await;
    let request = site.client().get(site.url("/public/held")).send();
    let in_flight = tokio::spawn(async move {
        let response = request.await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    tokio::time::timeout(SLOW, site.app.state.held_arrived.notified()).await.expect("the request reaches the app");

    gateway.signal("TERM");
    assert_eq!(site.notification().await.as_deref(), Some("STOPPING=1"));
    site.wait_until_refused().await;
    assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway waits for the request in flight");

    site.app.state.release_held.notify_one();
    assert_eq!(in_flight.await.unwrap(), (200, "finished\n".to_string()));
    // Well within the grace of a minute: the gateway leaves once its last
    // request is answered.
    let status = gateway.exit_status().await;
    assert!(status.success(), "{status}\n{}", gateway.log());
}

#[tokio::test]
async fn serve_refuses_listeners_it_cannot_have() {
    let site = Site::new("30s").await;
    let stderr = |output: std::process::Output| {
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let error = stderr(site.command(true).output().await.unwrap());
    assert!(error.contains("nothing to take over, no process listens on"), "{error}");

    let taken = std::net::TcpListener::bind(site.addr).unwrap();
    let error = stderr(site.command(false).output().await.unwrap());
    assert!(error.contains(&format!("cannot listen on {}", site.addr)) && error.contains("--upgrade"), "{error}");
    drop(taken);

    std::fs::set_permissions(site.dir.path().join("run"), std::fs::Permissions::from_mode(0o770)).unwrap();
    let error = stderr(site.command(true).output().await.unwrap());
    assert!(error.contains("can be written by group or others (mode 770)"), "{error}");
}

#[test]
fn the_systemd_unit_upgrades_and_stops_gracefully_and_verifies() {
    let unit = include_str!("../config/stepgate.service");
    for setting in ["Type=notify", "NotifyAccess=all", "KillSignal=SIGTERM", "RuntimeDirectoryMode=0700", "NoNewPrivileges=yes"] {
        assert!(unit.lines().any(|line| line == setting), "the unit should have {setting}");
    }
    assert!(unit.contains("serve --config /etc/stepgate/stepgate.toml --upgrade &"), "ExecReload starts the new process");
    assert!(unit.contains("kill -QUIT \"$$MAINPID\""), "ExecReload hands over from the main process");
    let stop_timeout: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .and_then(|seconds| seconds.parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop_timeout > 30, "TimeoutStopSec must be above the default shutdown_grace");

    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped `systemd-analyze verify`: systemd-analyze is not installed");
        return;
    }
    // verify wants the executables to exist.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stepgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/stepgate", env!("CARGO_BIN_EXE_stepgate"))).unwrap();
    let output = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It reports unknown settings and bad values, but still succeeds.
    let complaints: Vec<&str> = stderr.lines().filter(|line| line.contains("stepgate.service")).collect();
    assert!(output.status.success() && complaints.is_empty(), "{stderr}");
}
