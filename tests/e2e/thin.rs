//! Thin bundles against real servers on loopback: Debian's nginx (ranges
//! over plain HTTP, bytes counted in its access log), Garage (S3 with
//! SigV4), and a fault-injecting proxy of our own between the stub and
//! nginx.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// The exit code of a launch whose blocks could not be fetched.
const REMOTE: i32 = 118;

/// nginx serving `www` on a free loopback port; its access log has one
/// line per request: status and body bytes sent.
pub(crate) struct Nginx {
    child: Child,
    port: u16,
    /// The same files over HTTPS, with a certificate for 127.0.0.1 from a
    /// test CA (`ca`, PEM).
    tls_port: u16,
    ca: PathBuf,
    log: PathBuf,
    www: PathBuf,
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost
/// (openssl): the CA's PEM, the server's certificate and key.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f);
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    std::fs::write(p("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tote test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

impl Nginx {
    pub(crate) fn start(t: &TestDir) -> Nginx {
        let dir = t.join("nginx");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let (ca, cert, key) = test_ca(&dir);
        let port = crate::nomad::free_port();
        let tls_port = crate::nomad::free_port();
        let conf = format!(
            "daemon off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 2;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  log_format counted '$status $body_bytes_sent $connection';\n  access_log {d}/access.log counted;\n  \
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n  \
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n  \
             server {{ listen 127.0.0.1:{port}; root {w}; }}\n  \
             server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {c}; ssl_certificate_key {k}; root {w}; }}\n}}\n",
            d = dir.display(),
            w = www.display(),
            c = cert.display(),
            k = key.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/setup installs nginx-light)");
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            tls_port,
            ca,
            log: dir.join("access.log"),
            www,
        }
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn https_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.tls_port)
    }

    /// Put `file` on the server as `name`.
    pub(crate) fn upload(&self, file: &Path, name: &str) {
        std::fs::copy(file, self.www.join(name)).unwrap();
    }

    /// Requests served so far: (status, body bytes).
    pub(crate) fn served(&self) -> Vec<(u16, u64)> {
        self.log().into_iter().map(|(s, b, _)| (s, b)).collect()
    }

    /// Requests served so far: (status, body bytes, connection number).
    fn log(&self) -> Vec<(u16, u64, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some((
                    w.next()?.parse().ok()?,
                    w.next()?.parse().ok()?,
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Connections the requests so far came on.
    fn connections(&self) -> usize {
        let mut c: Vec<u64> = self.log().iter().map(|r| r.2).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    }

    /// Body bytes of the requests after the first `since`.
    fn bytes_since(&self, since: usize) -> u64 {
        self.served().iter().skip(since).map(|(_, b)| b).sum()
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master takes its workers with it.
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Pass it through.
    None,
    /// Close the connection halfway through the body.
    Drop,
    /// Answer with this status and no body.
    Status(u16),
    /// Send nothing, for longer than the client waits.
    Stall,
    /// Drop the Range header: the server answers 200 with the whole file.
    WholeFile,
    /// Flip one byte of the body.
    Flip,
    /// Answer with a shorter range than asked for.
    Short,
    /// Pass it through at 4 MiB/s.
    Slow,
}

/// A proxy to nginx that applies `faults` to requests in turn (then
/// `always`), counting the requests it saw.
struct Proxy {
    port: u16,
    plan: Arc<Mutex<(VecDeque<Fault>, Fault, usize)>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let plan = Arc::new(Mutex::new((VecDeque::new(), Fault::None, 0)));
        let p = Arc::clone(&plan);
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let fault = {
                    let mut p = p.lock().unwrap();
                    p.2 += 1;
                    let always = p.1;
                    p.0.pop_front().unwrap_or(always)
                };
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, fault);
                });
            }
        });
        Proxy { port, plan }
    }

    /// The next requests get `once`, in order, then all get `always`.
    fn plan(&self, once: &[Fault], always: Fault) {
        let mut p = self.plan.lock().unwrap();
        p.0 = once.iter().copied().collect();
        p.1 = always;
    }

    fn requests(&self) -> usize {
        self.plan.lock().unwrap().2
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

fn serve(mut client: TcpStream, upstream: u16, fault: Fault) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    match fault {
        Fault::Status(code) => {
            return client.write_all(
                format!("HTTP/1.1 {code} Injected\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
            )
        }
        Fault::Stall => {
            std::thread::sleep(Duration::from_secs(4));
            return Ok(());
        }
        _ => {}
    }
    // One request per connection: nginx is told to close it after its
    // answer (which says so to the client), so that the body ends there.
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines: Vec<&str> = text
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            let dropped = l.starts_with("connection:") || (fault == Fault::WholeFile && l.starts_with("range:"));
            !l.is_empty() && !dropped
        })
        .collect();
    lines.push("connection: close");
    let text = lines.join("\r\n") + "\r\n\r\n";
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(text.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    let (h, body) = resp.split_at(split);
    let mut body = body.to_vec();
    let mut h = String::from_utf8_lossy(h).into_owned();
    match fault {
        Fault::Drop => {
            client.write_all(h.as_bytes())?;
            client.write_all(&body[..body.len() / 2])?;
            return Ok(());
        }
        Fault::Flip if !body.is_empty() => {
            let mid = body.len() / 2;
            body[mid] ^= 0x01;
        }
        Fault::Short if body.len() > 1 => {
            // `Content-Range: bytes A-B/T` becomes A-(B-1), one byte less.
            let lines: Vec<String> = h
                .split("\r\n")
                .map(|l| {
                    let lower = l.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-range: bytes ") {
                        let (span, total) = v.split_once('/').unwrap();
                        let (a, b) = span.split_once('-').unwrap();
                        format!("content-range: bytes {a}-{}/{total}", b.parse::<u64>().unwrap() - 1)
                    } else if lower.starts_with("content-length:") {
                        format!("content-length: {}", body.len() - 1)
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            h = lines.join("\r\n");
            body.pop();
        }
        Fault::Slow => {
            client.write_all(h.as_bytes())?;
            for chunk in body.chunks(64 << 10) {
                std::thread::sleep(Duration::from_millis(16));
                client.write_all(chunk)?;
            }
            return Ok(());
        }
        _ => {}
    }
    client.write_all(h.as_bytes())?;
    client.write_all(&body)
}

/// The demo app (examples/hello-python) with `greeting`, bundled: the full
/// file. Every version shares its CPython store paths with the others
/// (one nonce for this run): they differ in the app's own store path only.
fn demo(t: &TestDir, name: &str, greeting: &str) -> PathBuf {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let nonce = NONCE.get_or_init(nonce);
    let out = Command::new("nix-build")
        .arg(repo().join("examples/hello-python"))
        .args(["--argstr", "greeting", greeting, "--argstr", "nonce", nonce])
        .args(["--no-out-link", "--quiet", "--option", "sandbox", "false"])
        .args(["--option", "build-users-group", "", "--option", "substituters", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", stderr(&out));
    let app = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let file = t.join(name);
    let o = bundle(&app, &file, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    file
}

/// `tote thin FULL --url URL [extra] -o OUT`.
pub(crate) fn thin(full: &Path, url: &str, out: &Path, extra: &[&str]) {
    let o = tote()
        .arg("thin")
        .arg(full)
        .args(["--url", url])
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "tote thin: {}", stderr(&o));
}

/// Run `app` as root with the cache root `cache` and `env`.
fn launch(app: &Path, cache: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(app);
    c.args(args).env("TOTE_CACHE_DIR", cache).env_remove("TOTE_REMOTE_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Exit 118 with one `tote:` line holding every one of `wants`, and no
/// entry (nor any staging) left in the cache.
fn refused(o: &Output, cache: &Path, wants: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(REMOTE), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("tote: "), "{e}");
    for w in wants {
        assert!(e.contains(w), "no {w:?} in: {e}");
    }
    assert!(o.stdout.is_empty(), "the program ran");
    let left: Vec<String> = std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "objects")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

/// A fresh host fetches the blocks once (then nothing: warm), as uid 65534
/// in a busybox root; v2 after v1 fetches what `tote diff` says must be
/// extracted; the thin and full files share their cache entry; inspect and
/// verify know the file for what it is.
#[test]
fn a_thin_bundle_fetches_only_the_blocks_its_cache_lacks() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let v1 = demo(&t, "v1", "hello from v1");
    nginx.upload(&v1, "app-v1");
    let thin1 = t.join("thin1");
    thin(&v1, &nginx.url("app-v1"), &thin1, &[]);
    let (full_len, thin_len) = (
        std::fs::metadata(&v1).unwrap().len(),
        std::fs::metadata(&thin1).unwrap().len(),
    );
    assert!(
        thin_len < 2 << 20 && thin_len * 10 < full_len,
        "{thin_len} of {full_len}"
    );
    let j = inspect_json(&thin1);
    assert_eq!(j["format_version"], 7);
    // The thin stub's budget: 2 MiB (the network code is its own flavour).
    let stub = j["sizes"]["stub"].as_u64().unwrap();
    let plain = inspect_json(&v1)["sizes"]["stub"].as_u64().unwrap();
    assert!(
        stub <= 2 << 20 && stub > plain,
        "thin stub {stub} bytes, ordinary {plain}"
    );
    assert_eq!(
        j["bundle_id"],
        inspect_json(&v1)["bundle_id"],
        "the thin file's entry is the full one's"
    );
    assert_eq!(j["remote"]["url"], nginx.url("app-v1").as_str());
    assert_eq!(j["remote"]["full_size"], full_len);
    let data_len = j["remote"]["compressed"].as_u64().unwrap();

    // A fresh host: a busybox root (no /nix, /usr or glibc), uid 65534.
    let user: &[&str] = &["--unshare-user", "--uid", "65534", "--gid", "65534"];
    let o = in_busybox_root(&t, &thin1, &["one"], user);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("hello from v1\n") && out.contains("arguments: ['one']"),
        "{out}"
    );
    assert!(out.contains("running as uid 65534"), "{out}");
    let served = nginx.served();
    assert!(served.iter().all(|(s, _)| *s == 206), "{served:?}");
    // Every block once, and the full bundle's trailer (checked first).
    assert_eq!(nginx.bytes_since(0), data_len + 144, "{served:?}");
    // Connections are kept: the trailer's carries a range request after it.
    assert!(
        served.len() >= 2 && nginx.connections() < served.len(),
        "{:?}",
        nginx.log()
    );
    // Warm: nothing fetched.
    let o = in_busybox_root(&t, &thin1, &["two"], user);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(nginx.served().len(), served.len(), "a warm start fetched");

    // v2 after v1, as root with a cache of its own: what `tote diff` says
    // a thin bundle fetches (the blocks to extract, and the trailer).
    let cache = t.join("cache");
    assert!(launch(&thin1, &cache, &[], &[]).status.success());
    let v2 = demo(&t, "v2", "hello from v2");
    nginx.upload(&v2, "app-v2");
    let thin2 = t.join("thin2");
    thin(&v2, &nginx.url("app-v2"), &thin2, &[]);
    let d = tote().args(["diff", "--json"]).arg(&v1).arg(&v2).output().unwrap();
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let want = d["extract"]["thin_fetched_bytes"].as_u64().unwrap();
    assert!(
        want * 10 < data_len,
        "v2 shares most blocks with v1: {want} of {data_len}"
    );
    let before = nginx.served().len();
    let o = launch(&thin2, &cache, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello from v2\n"));
    assert_eq!(
        nginx.bytes_since(before),
        want,
        "v2 after v1: {:?}",
        &nginx.served()[before..]
    );
    // The full v2 finds the entry the thin one made: nothing extracted.
    let o = launch(&v2, &cache, &[("TOTE_DEBUG", "1")], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("extracted:"), "{}", stderr(&o));
    // TOTE_MODE=mount: the Python demo runs from blocks fetched as it
    // reads them, kept in the cache root's block store.
    let mounted = t.join("cache-mount");
    let o = launch(&thin2, &mounted, &[("TOTE_MODE", "mount")], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello from v2\n"));
    let id2 = inspect_json(&thin2)["bundle_id"].as_str().unwrap().to_string();
    assert_eq!(t.entries(&mounted), [format!("{id2}.blocks"), "mnt".to_string()]);

    // tote verify: the thin file alone, then with every remote block.
    let v = tote().arg("verify").arg(&thin2).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("not checked (--remote checks them)"));
    let v = tote().args(["verify", "--remote"]).arg(&thin2).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    // Commands that need the blocks themselves say where they are.
    let x = tote().arg("extract").arg(&thin2).arg(t.join("x")).output().unwrap();
    assert_eq!(x.status.code(), Some(1));
    assert!(
        stderr(&x).contains("a thin bundle: its blocks are at http://"),
        "{}",
        stderr(&x)
    );
}

/// Every fault of the proxy: the transient ones, once, are retried past;
/// the lasting ones end the launch with its line, nothing half-published.
#[test]
fn fetch_faults_are_retried_or_end_the_launch_with_one_line() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let full = demo(&t, "full", "hello through faults");
    nginx.upload(&full, "app");
    let proxy = Proxy::start(nginx.port);
    let app = t.join("thin");
    thin(&full, &proxy.url("app"), &app, &[]);
    let fast = [("TOTE_REMOTE_TIMEOUT", "1")];
    for (n, fault) in [
        Fault::Drop,
        Fault::Status(500),
        Fault::Status(503),
        Fault::Stall,
        Fault::Flip,
        Fault::Short,
    ]
    .into_iter()
    .enumerate()
    {
        // The trailer check, then the first block range: faulty once.
        proxy.plan(&[Fault::None, fault], Fault::None);
        let cache = t.join(format!("cache-once-{n}"));
        let o = launch(&app, &cache, &fast, &[]);
        assert!(o.status.success(), "{fault:?} once: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello through faults\n"));
    }
    let url = proxy.url("app");
    for (n, (fault, wants)) in [
        (Fault::Status(503), vec![url.as_str(), "HTTP 503 (after 4 attempts)"]),
        (Fault::Status(403), vec![url.as_str(), "HTTP 403: access denied"]),
        (Fault::Status(404), vec![url.as_str(), "HTTP 404: no such object"]),
        (
            Fault::WholeFile,
            vec![url.as_str(), "the server sent the whole object (200)"],
        ),
        (
            Fault::Flip,
            vec![url.as_str(), "does not match its SHA-256 in the index, twice"],
        ),
        (
            Fault::Drop,
            vec![url.as_str(), "the connection closed after", "(after 4 attempts)"],
        ),
        (Fault::Stall, vec![url.as_str(), "timed out", "(after 4 attempts)"]),
    ]
    .into_iter()
    .enumerate()
    {
        // The trailer check passes; every block range fails.
        proxy.plan(&[Fault::None], fault);
        let cache = t.join(format!("cache-always-{n}"));
        let o = launch(&app, &cache, &fast, &[]);
        refused(&o, &cache, &wants);
    }
    // Nothing listening.
    let cache = t.join("cache-closed");
    let o = launch(&app, &cache, &[("TOTE_REMOTE_URL", "http://127.0.0.1:1/app")], &[]);
    refused(
        &o,
        &cache,
        &[
            "http://127.0.0.1:1/app",
            "connecting to 127.0.0.1:1",
            "Connection refused",
        ],
    );
    // The name now holds another build: refused before any block.
    proxy.plan(&[], Fault::None);
    let other = demo(&t, "other", "another build");
    nginx.upload(&other, "app");
    let before = proxy.requests();
    let cache = t.join("cache-replaced");
    let o = launch(&app, &cache, &[], &[]);
    refused(
        &o,
        &cache,
        &["is not the bundle this thin file was made from", "it was replaced"],
    );
    assert_eq!(proxy.requests() - before, 1, "only the trailer was asked for");
    // A bad TOTE_REMOTE_TIMEOUT is the caller's mistake (113).
    let o = launch(&app, &cache, &[("TOTE_REMOTE_TIMEOUT", "soon")], &[]);
    assert_eq!(o.status.code(), Some(113), "{}", stderr(&o));
}

/// Eight cold launches at once fetch each block once; a launch killed in
/// the middle of its fetch leaves a cache the next one completes.
#[test]
fn concurrent_and_killed_cold_launches() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let full = demo(&t, "full", "hello eight times");
    nginx.upload(&full, "app");
    let app = t.join("thin");
    thin(&full, &nginx.url("app"), &app, &[]);
    let data_len = inspect_json(&app)["remote"]["compressed"].as_u64().unwrap();
    let cache = t.join("cache");
    let children: Vec<Child> = (0..8)
        .map(|_| {
            Command::new(&app)
                .env("TOTE_CACHE_DIR", &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello eight times\n"));
    }
    assert_eq!(
        nginx.bytes_since(0),
        data_len + 144,
        "each block once: {:?}",
        nginx.served()
    );

    // Killed mid-fetch (every range stalls past the timeout), then again.
    let proxy = Proxy::start(nginx.port);
    let cache = t.join("cache-killed");
    for delay_ms in [300, 1500] {
        proxy.plan(&[Fault::None], Fault::Stall);
        let mut c = Command::new(&app)
            .env("TOTE_CACHE_DIR", &cache)
            .env("TOTE_REMOTE_URL", proxy.url("app"))
            .env("TOTE_REMOTE_TIMEOUT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    proxy.plan(&[], Fault::None);
    let o = launch(&app, &cache, &[("TOTE_REMOTE_URL", &proxy.url("app"))], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello eight times\n"));
    let v = tote()
        .args(["cache", "verify", "--json", "--root"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
}

/// S3 with SigV4 (Garage): signed with the read key; refused without it,
/// naming the fix; a mirror through TOTE_REMOTE_URL.
#[test]
fn a_thin_bundle_fetches_from_s3_with_sigv4() {
    let t = TestDir::new();
    let full = demo(&t, "full", "hello from s3");
    let garage = crate::nomad::Garage::start(&t);
    garage.upload(&full, "apps/app");
    let app = t.join("thin");
    let url = format!("s3://{}/apps/app", garage.var("TOTE_BUCKET"));
    thin(
        &full,
        &url,
        &app,
        &["--endpoint", &garage.var("AWS_ENDPOINT_URL"), "--region", "garage"],
    );
    let j = inspect_json(&app);
    assert_eq!(j["remote"]["endpoint"], garage.var("AWS_ENDPOINT_URL").as_str());
    let read = [
        ("AWS_ACCESS_KEY_ID", garage.var("TOTE_READ_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", garage.var("TOTE_READ_SECRET")),
    ];
    let read: Vec<(&str, &str)> = read.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cache = t.join("cache");
    let o = launch(&app, &cache, &read, &["s3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello from s3\n"));
    // Anonymous: Garage refuses, and the line says what to set.
    let cache = t.join("cache-anonymous");
    let mut c = Command::new(&app);
    c.env("TOTE_CACHE_DIR", &cache)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("TOTE_REMOTE_URL");
    let o = c.output().unwrap();
    refused(&o, &cache, &[&url, "HTTP 403", "AWS_ACCESS_KEY_ID"]);
    // A wrong secret: the signature does not match.
    let cache = t.join("cache-wrong");
    let o = launch(&app, &cache, &[read[0], ("AWS_SECRET_ACCESS_KEY", "wrong")], &[]);
    refused(&o, &cache, &[&url, "HTTP 403"]);
    // A mirror over plain HTTP.
    let nginx = Nginx::start(&t);
    nginx.upload(&full, "mirror");
    let cache = t.join("cache-mirror");
    let o = launch(&app, &cache, &[("TOTE_REMOTE_URL", &nginx.url("mirror"))], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!nginx.served().is_empty());
}

/// `tote thin` refuses what it cannot make, with one line and nothing
/// written.
#[test]
fn tote_thin_refuses_bad_input_with_one_line() {
    let f = fixture();
    let t = TestDir::new();
    let out = t.join("out");
    let thin_file = t.join("thin");
    thin(&f.probe, "http://127.0.0.1:9/probe", &thin_file, &[]);
    // `tote bundle --thin URL` writes both, the thin one as OUTPUT-thin;
    // a bad URL is refused before anything is written.
    let store = build("probe", &nonce());
    let both = t.join("both");
    let o = bundle(
        &store,
        &both,
        &["--thin", "s3://b/k", "--endpoint", "http://127.0.0.1:9", "--level", "3"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j = inspect_json(&t.join("both-thin"));
    assert_eq!(j["bundle_id"], inspect_json(&both)["bundle_id"]);
    assert_eq!(
        (j["remote"]["url"].as_str(), j["remote"]["endpoint"].as_str()),
        (Some("s3://b/k"), Some("http://127.0.0.1:9"))
    );
    let o = tote()
        .args(["bundle", &store, "--thin", "ftp://x/y", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--thin: remote record: \"ftp://x/y\": not an http://"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists() && !t.join("out-thin").exists());
    for (args, want) in [
        (
            vec![f.probe.to_str().unwrap(), "--url", "ftp://x/y"],
            "not an http://, https:// or s3:// URL",
        ),
        (
            vec![f.probe.to_str().unwrap(), "--url", "http://x"],
            "names no host (or bucket) and object",
        ),
        (
            vec![
                f.probe.to_str().unwrap(),
                "--url",
                "http://x/y",
                "--endpoint",
                "http://e",
            ],
            "for s3:// URLs only",
        ),
        (
            vec![thin_file.to_str().unwrap(), "--url", "http://x/y"],
            "already a thin bundle",
        ),
        (vec!["/etc/hostname", "--url", "http://x/y"], "not a tote bundle"),
    ] {
        let o = tote().arg("thin").args(&args).arg("-o").arg(&out).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

/// The deploy path of a thin bundle: the thin file is the job's artifact
/// (through S3, checksum pinned); its blocks come from S3 too, signed with
/// a key the task reads from Nomad variables (a template, not the job);
/// the cache is on a host volume, so a second allocation on the client
/// fetches nothing.
#[test]
fn allocations_of_a_thin_bundle_share_its_blocks_through_the_cache_volume() {
    let t = TestDir::new();
    let full = demo(&t, "full", "hello from a thin bundle under Nomad");
    let garage = crate::nomad::Garage::start(&t);
    let bucket = garage.var("TOTE_BUCKET");
    garage.upload(&full, "apps/app");
    // Blocks through a proxy, to count the requests.
    let endpoint = garage.var("AWS_ENDPOINT_URL");
    let garage_port: u16 = endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = Proxy::start(garage_port);
    let app = t.join("hello-python");
    let s3_url = format!("s3://{bucket}/apps/app");
    let proxied = format!("http://127.0.0.1:{}", proxy.port);
    thin(&full, &s3_url, &app, &["--endpoint", &proxied, "--region", "garage"]);
    garage.upload(&app, "apps/app-thin");
    let text = garage.job(&app, "apps/app-thin", &["--cache-volume", "tote-cache"]);
    // The task's key comes from a template over Nomad variables.
    let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let task = ["job", "group", "task"].iter().fold(&body, |b, id| {
        b.blocks()
            .find(|x| x.identifier() == *id)
            .unwrap_or_else(|| panic!("no {id}"))
            .body()
    });
    let template = task
        .blocks()
        .find(|b| b.identifier() == "template")
        .expect("a template block");
    let template = hcl::to_string(template.body()).unwrap();
    assert!(
        template.contains("nomadVar \\\"nomad/jobs/hello-python\\\"")
            || template.contains("nomadVar \"nomad/jobs/hello-python\""),
        "{template}"
    );
    assert!(template.contains("env = true"), "{template}");
    let env = task
        .blocks()
        .find(|b| b.identifier() == "env")
        .map(|b| hcl::to_string(b.body()).unwrap());
    assert!(!env.unwrap_or_default().contains("AWS_SECRET"), "{text}");
    let job = t.join("app.nomad.hcl");
    std::fs::write(&job, &text).unwrap();
    let volume = t.join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let var = |k: &str, v: &str| format!("nomad/jobs/hello-python:{k}={v}");
    let mut requests = Vec::new();
    for alloc in ["a1", "a2"] {
        let before = proxy.requests();
        let o = Command::new(crate::nomad::sim_binary())
            .arg(&job)
            .arg("--alloc-dir")
            .arg(t.join(alloc))
            .arg("--host-volume")
            .arg(format!("tote-cache={}", volume.display()))
            .args(["--var", &var("AWS_ACCESS_KEY_ID", &garage.var("TOTE_READ_KEY_ID"))])
            .args(["--var", &var("AWS_SECRET_ACCESS_KEY", &garage.var("TOTE_READ_SECRET"))])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let logs = t.join(alloc).join("alloc/logs");
        let out = std::fs::read_to_string(logs.join("hello-python.stdout.0")).unwrap_or_default();
        let err = std::fs::read_to_string(logs.join("hello-python.stderr.0")).unwrap_or_default();
        assert!(o.status.success(), "{alloc}: {}\n{out}\n{err}", stderr(&o));
        assert!(stderr(&o).contains("template -> secrets/tote-s3.env"), "{}", stderr(&o));
        assert!(
            out.starts_with("hello from a thin bundle under Nomad\n"),
            "{alloc}: {out}\n{err}"
        );
        assert!(out.contains("running as uid 65534"), "{out}");
        requests.push(proxy.requests() - before);
    }
    assert!(
        requests[0] >= 2,
        "the first allocation fetched its blocks: {requests:?}"
    );
    assert_eq!(requests[1], 0, "the second found them in the cache volume");
}

/// HTTPS with the host's CA certificates: a server whose CA is named by
/// SSL_CERT_FILE (or found in SSL_CERT_DIR) is trusted; without it the
/// system's bundle does not know the test CA, and the launch says so.
#[test]
fn a_thin_bundle_fetches_over_https_trusting_the_hosts_certificates() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let full = demo(&t, "full", "hello over https");
    nginx.upload(&full, "app");
    let app = t.join("thin");
    thin(&full, &nginx.https_url("app"), &app, &[]);
    let ca = nginx.ca.to_str().unwrap();
    let o = launch(
        &app,
        &t.join("cache-file"),
        &[("SSL_CERT_FILE", ca), ("SSL_CERT_DIR", "")],
        &["tls"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello over https\n"));
    let certs = t.join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&nginx.ca, certs.join("test-ca.pem")).unwrap();
    let mut c = Command::new(&app);
    c.env("TOTE_CACHE_DIR", t.join("cache-dir"))
        .env("SSL_CERT_DIR", &certs)
        .env_remove("SSL_CERT_FILE");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Not trusted: the host's bundle has no test CA.
    let cache = t.join("cache-untrusted");
    let mut c = Command::new(&app);
    c.env("TOTE_CACHE_DIR", &cache)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let o = c.output().unwrap();
    refused(&o, &cache, &[&nginx.https_url("app"), "UnknownIssuer"]);
    let v = tote()
        .args(["verify", "--remote"])
        .arg(&app)
        .env("SSL_CERT_FILE", ca)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
}

/// SIGKILL at random moments of a thin bundle's fetch (each range at
/// 4 MiB/s), then a launch: it completes the cache, and nothing half-done
/// is left. 10 trials; `scripts/soak` runs TOTE_TRIALS_SCALE times more.
#[test]
fn sigkill_at_random_moments_of_a_fetch_never_breaks_the_next_launch() {
    use crate::hardening::{entries, leftovers, scale, Rng};
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let full = demo(&t, "full", "hello after a kill");
    nginx.upload(&full, "app");
    let proxy = Proxy::start(nginx.port);
    proxy.plan(&[], Fault::Slow);
    let app = t.join("thin");
    thin(&full, &proxy.url("app"), &app, &[]);
    let root = t.join("cache");
    // How long a cold start takes through the slow proxy: kill within it.
    let start = Instant::now();
    let o = launch(&app, &root, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cold_us = start.elapsed().as_micros() as u64;
    let mut rng = Rng::new();
    let trials = scale(10);
    let mut killed = 0;
    for trial in 0..trials {
        let _ = std::process::Command::new("rm").arg("-rf").arg(&root).status();
        let mut child = Command::new(&app)
            .env("TOTE_CACHE_DIR", &root)
            .env_remove("TOTE_REMOTE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(cold_us)));
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            killed += 1;
        }
        let o = launch(&app, &root, &[], &[]);
        assert!(o.status.success(), "trial {trial}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("hello after a kill\n"),
            "trial {trial}"
        );
        assert!(
            leftovers(&root).is_empty(),
            "trial {trial}: left {:?}",
            leftovers(&root)
        );
        assert_eq!(entries(&root).len(), 1, "trial {trial}");
    }
    eprintln!("{trials} trials, {killed} killed mid-way");
    assert!(killed > trials / 4, "the kills came too late to test anything");
}

/// A bundle of `bin/run`, a script (host sh and sha256sum) that touches
/// `$STARTED`, waits for `$GO`, then prints the SHA-256 of `data/blob`
/// (`len` bytes, incompressible) or `read failed` (exit 3); in 64 KiB
/// blocks, as for mount mode. The full file, and the blob's SHA-256.
fn waiting_reader(t: &TestDir, len: usize) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = t.join("reader");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let run = dir.join("bin/run");
    std::fs::write(
        &run,
        "#!/bin/sh\n: > \"$STARTED\"\nwhile [ ! -e \"$GO\" ]; do sleep 0.05; done\n\
         sum=$(sha256sum \"$(dirname \"$0\")/../data/blob\") || { echo read failed; exit 3; }\n\
         echo \"${sum%% *}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let blob = random_bytes(len);
    std::fs::write(dir.join("data/blob"), &blob).unwrap();
    let full = t.join("reader-full");
    bundle(
        dir.to_str().unwrap(),
        &full,
        &["--mode", "mount", "--entrypoint", "bin/run"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let sum = hex(&tote_format::sha256(&blob).0);
    (full, sum)
}

/// `len` bytes that do not compress.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Wait up to `secs` for `done`.
fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start the waiting reader `app` mounted, with cache root `cache`; the
/// path of its `$GO`, once it has started.
fn start_reader(t: &TestDir, app: &Path, cache: &Path, env: &[(&str, &str)], tag: &str) -> (Child, PathBuf) {
    let (started, go) = (t.join(format!("started-{tag}")), t.join(format!("go-{tag}")));
    let mut c = Command::new(app);
    c.env("TOTE_CACHE_DIR", cache)
        .env("TOTE_MODE", "mount")
        .env("STARTED", &started)
        .env("GO", &go)
        .env_remove("TOTE_REMOTE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    wait_for("the program to start", 60, || started.exists());
    (child, go)
}

/// The block store's `have` file: one byte per block, 1 once fetched.
fn have(cache: &Path, id: &str) -> Vec<u8> {
    std::fs::read(cache.join(format!("{id}.blocks/have"))).unwrap_or_default()
}

/// Mount mode: launches killed while prefetching leave blocks the next one
/// keeps; a cold launch fetches blocks as the program reads them and
/// prefetches the rest, each block once; once prefetched, the object can
/// go away and the program still reads every byte; the next launch makes
/// no request; a damaged block in the store is fetched again, alone; the
/// store is listed, verified and trimmed like an entry.
#[test]
fn a_mounted_thin_bundle_fetches_as_it_reads_and_outlives_its_storage() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let proxy = Proxy::start(nginx.port);
    let (full, sum) = waiting_reader(&t, 24 << 20);
    nginx.upload(&full, "reader");
    let app = t.join("reader-thin");
    thin(&full, &proxy.url("reader"), &app, &[]);
    let j = inspect_json(&full);
    let id = j["bundle_id"].as_str().unwrap().to_string();
    let index = bundle_index(&full);
    let data_len: u64 = index.blocks.iter().map(|b| u64::from(b.clen)).sum();
    let cache = t.join("cache");

    // Killed as the program starts, while prefetching through a proxy of
    // 4 MiB/s per connection (24 MiB, four ranges at a time: 1.5 s at the
    // least), twice: the next launch keeps what was fetched, and reads
    // every byte right.
    let killed = t.join("cache-killed");
    proxy.plan(&[], Fault::Slow);
    for n in 0..2 {
        let (mut child, _) = start_reader(&t, &app, &killed, &[], &format!("k{n}"));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let held = have(&killed, &id).iter().filter(|&&h| h == 1).count();
    assert!(held < index.blocks.len(), "the prefetch finished before the kill");
    proxy.plan(&[], Fault::None);
    let (child, go) = start_reader(&t, &app, &killed, &[], "k");
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{sum}\n"));
    let v = tote()
        .args(["cache", "verify", "--root"])
        .arg(&killed)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let served = nginx.served().len();
    let requests = proxy.requests();

    let (child, go) = start_reader(&t, &app, &cache, &[("TOTE_DEBUG", "1")], "a");
    wait_for("the prefetch", 60, || {
        let h = have(&cache, &id);
        h.len() == index.blocks.len() && h.iter().all(|&b| b == 1)
    });
    // The storage goes away: the program still reads everything.
    std::fs::remove_file(nginx.www.join("reader")).unwrap();
    proxy.plan(&[], Fault::Status(503));
    let requests2 = proxy.requests();
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{sum}\n"));
    assert_eq!(proxy.requests(), requests2, "requests after the prefetch");
    // Each block once: the data section and the trailer's check.
    assert_eq!(
        nginx.bytes_since(served),
        data_len + 144,
        "{:?}",
        &nginx.served()[served..]
    );
    assert!(proxy.requests() > requests);
    assert!(
        stderr(&o).contains(&format!("fetched {data_len} bytes from")),
        "{}",
        stderr(&o)
    );

    // Warm: nothing fetched (the storage is still gone).
    let (child, go) = start_reader(&t, &app, &cache, &[], "b");
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{sum}\n"));
    assert_eq!(proxy.requests(), requests2);

    // A damaged block in the store: the reader's check fails, the block
    // (alone) is fetched again, and the program gets the right bytes.
    nginx.upload(&full, "reader");
    proxy.plan(&[], Fault::None);
    let victim = index.blocks.len() / 2;
    let b = index.blocks[victim];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(cache.join(format!("{id}.blocks/data")))
            .unwrap();
        f.write_all_at(&[0x55; 16], b.offset + u64::from(b.clen) / 2).unwrap();
    }
    let v = tote().args(["cache", "verify", "--root"]).arg(&cache).output().unwrap();
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&format!("block {victim} does not match")),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let before = nginx.served().len();
    let (child, go) = start_reader(&t, &app, &cache, &[], "c");
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{sum}\n"));
    assert_eq!(
        nginx.bytes_since(before),
        u64::from(b.clen),
        "{:?}",
        &nginx.served()[before..]
    );
    let v = tote().args(["cache", "verify", "--root"]).arg(&cache).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // Listed, counted, and trimmed like an entry.
    let ls = tote()
        .args(["cache", "ls", "--json", "--root"])
        .arg(&cache)
        .output()
        .unwrap();
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let e = &ls["entries"][0];
    assert_eq!(e["name"], format!("{id}.blocks"));
    assert_eq!(e["fetched_blocks"], true);
    assert!(e["own_bytes"].as_u64().unwrap() >= data_len, "{e}");
    let p = tote()
        .args(["cache", "prune", "--max-size", "0", "--root"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", stderr(&p));
    assert_eq!(t.entries(&cache), ["mnt"]);
}

/// Mount mode with `TOTE_PREFETCH=off` fetches only what the program
/// reads; when the storage then goes away, the read of a block not yet
/// fetched fails with EIO and one line per block, after the retries: no
/// hang.
#[test]
fn a_mounted_thin_bundle_whose_storage_goes_away_gives_eio_not_a_hang() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let proxy = Proxy::start(nginx.port);
    let (full, _) = waiting_reader(&t, 4 << 20);
    nginx.upload(&full, "reader");
    let app = t.join("reader-thin");
    thin(&full, &proxy.url("reader"), &app, &[]);
    let index = bundle_index(&full);
    let data_len: u64 = index.blocks.iter().map(|b| u64::from(b.clen)).sum();
    let cache = t.join("cache");
    let (child, go) = start_reader(&t, &app, &cache, &[("TOTE_PREFETCH", "off")], "a");
    // Started: only the script's blocks (and the trailer) were fetched.
    std::thread::sleep(Duration::from_millis(300));
    let fetched = nginx.bytes_since(0);
    assert!(
        fetched < data_len / 4,
        "{fetched} of {data_len} before the blob was read"
    );
    proxy.plan(&[], Fault::Drop);
    let started = Instant::now();
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "read failed\n");
    let e = stderr(&o);
    // One line per block a read could not get (the kernel's readahead may
    // have asked for a later block too).
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("tote: ")).collect();
    assert!(!lines.is_empty(), "{e}");
    for l in &lines {
        assert!(l.starts_with("tote: block ") && l.contains("fails with EIO"), "{e}");
    }
    assert!(e.contains("Input/output error"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // A bad value of the control is refused before anything runs.
    let o = launch(&app, &cache, &[("TOTE_MODE", "mount"), ("TOTE_PREFETCH", "maybe")], &[]);
    assert_eq!(o.status.code(), Some(113), "{}", stderr(&o));
    assert!(stderr(&o).contains("TOTE_PREFETCH=maybe: expected on or off"));
}

/// v2 after v1, where v2's changed file is stored as its differences from
/// an unchanged one (`share/b` repeats most of `share/a`): the launch
/// rebuilds the base blocks from the file its cache holds, fetching only
/// the changed file's blocks, as `tote diff` predicts (`thin_fetched_bytes`).
#[test]
fn base_blocks_are_rebuilt_from_cached_files_rather_than_fetched() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let a = random_bytes(2 << 20);
    let version = |v: u8| {
        let dir = t.join(format!("twins-v{v}"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("share")).unwrap();
        let run = dir.join("bin/run");
        std::fs::write(
            &run,
            "#!/bin/sh\nsha256sum \"$(dirname \"$0\")/../share/b\" | cut -c1-64\n",
        )
        .unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("share/a"), &a).unwrap();
        let mut b = a.clone();
        for at in (1000..b.len() - 64).step_by(300 << 10) {
            b[at..at + 64].fill(v);
        }
        std::fs::write(dir.join("share/b"), &b).unwrap();
        let full = t.join(format!("twins{v}"));
        bundle(
            dir.to_str().unwrap(),
            &full,
            &["--entrypoint", "bin/run", "--block-kib", "256"],
        );
        nginx.upload(&full, &format!("twins{v}"));
        let thin_file = t.join(format!("twins{v}-thin"));
        thin(&full, &nginx.url(&format!("twins{v}")), &thin_file, &[]);
        (full, thin_file, hex(&tote_format::sha256(&b).0))
    };
    let (full1, thin1, _) = version(1);
    let (full2, thin2, sum2) = version(2);
    assert!(inspect_json(&full2)["counts"]["based_blocks"].as_u64().unwrap() >= 4);
    let d = tote()
        .args(["diff", "--json"])
        .arg(&full1)
        .arg(&full2)
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let (decoded, fetch) = (
        d["extract"]["compressed_bytes"].as_u64().unwrap(),
        d["extract"]["thin_fetched_bytes"].as_u64().unwrap(),
    );
    assert!(fetch > 144 && fetch * 4 < decoded, "fetch {fetch} of {decoded}: {d}");

    let cache = t.join("cache");
    assert!(launch(&thin1, &cache, &[], &[]).status.success());
    let before = nginx.served().len();
    let o = launch(&thin2, &cache, &[("TOTE_DEBUG", "1")], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{sum2}\n"));
    assert_eq!(nginx.bytes_since(before), fetch, "{:?}", &nginx.served()[before..]);
    assert!(
        stderr(&o).contains("base blocks rebuilt from cached files"),
        "{}",
        stderr(&o)
    );
    // The entry it made is whole.
    let v = tote().args(["cache", "verify", "--root"]).arg(&cache).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// `app` (a thin file) run by bwrap as uid 65534 in a fresh busybox root
/// (no /nix, /usr or glibc; the host's /dev/fuse, for mount mode) under
/// `dir`, with TOTE_MODE=`mode` and `env`; spawned.
fn in_fresh_busybox_root(dir: &Path, app: &Path, mode: &str, env: &[(&str, &str)], args: &[&str]) -> Child {
    busybox_rootfs_at(dir, app);
    let mut c = Command::new("bwrap");
    c.args(["--unshare-user", "--uid", "65534", "--gid", "65534", "--bind"])
        .arg(dir)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--dev-bind",
            "/dev/fuse",
            "/dev/fuse",
        ])
        .args(["--setenv", "TOTE_MODE", mode, "--chdir", "/tmp"]);
    for (k, v) in env {
        c.args(["--setenv", k, v]);
    }
    c.arg("--").arg("/app").args(args);
    c.env_remove("TOTE_REMOTE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// The demo and the Flask app from thin files, in extract and in mount
/// mode, each on a fresh host (a busybox root, uid 65534): the demo's
/// output, and the Flask app's page over HTTP, then SIGINT ends it with
/// exit 0. Every block at most once; mount mode keeps its blocks.
#[test]
fn the_demo_and_the_flask_app_run_from_thin_files_in_both_modes() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let demo_full = demo(&t, "demo", "hello from a thin demo");
    nginx.upload(&demo_full, "demo");
    let demo_thin = t.join("demo-thin");
    thin(&demo_full, &nginx.url("demo"), &demo_thin, &[]);
    let flask_full = t.join("flask");
    bundle(&crate::nomad::flask_app(), &flask_full, &[]);
    nginx.upload(&flask_full, "flask");
    let flask_thin = t.join("flask-thin");
    thin(&flask_full, &nginx.url("flask"), &flask_thin, &[]);
    let data_len = |full: &Path| -> u64 { bundle_index(full).blocks.iter().map(|b| u64::from(b.clen)).sum() };

    for mode in ["extract", "mount"] {
        // The demo.
        let root = t.join(format!("demo-root-{mode}"));
        let before = nginx.served().len();
        let o = in_fresh_busybox_root(&root, &demo_thin, mode, &[], &["x"])
            .wait_with_output()
            .unwrap();
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.starts_with("hello from a thin demo\n"), "{mode}: {text}");
        assert!(text.contains("running as uid 65534"), "{mode}: {text}");
        let fetched = nginx.bytes_since(before);
        assert!(
            fetched > 144 && fetched <= data_len(&demo_full) + 144,
            "{mode}: {fetched}"
        );
        let cache = root.join("tmp/tote-65534");
        let id = inspect_json(&demo_full)["bundle_id"].as_str().unwrap().to_string();
        let kept = if mode == "mount" { format!("{id}.blocks") } else { id };
        assert!(cache.join(&kept).is_dir(), "{mode}: {:?}", t.entries(&cache));

        // The Flask app: its page, then SIGINT.
        let port = crate::nomad::free_port();
        let root = t.join(format!("flask-root-{mode}"));
        let before = nginx.served().len();
        let child = in_fresh_busybox_root(&root, &flask_thin, mode, &[("NOMAD_PORT_http", &port.to_string())], &[]);
        let end = Instant::now() + Duration::from_secs(120);
        let page = loop {
            if let Some((200, body)) = crate::nomad::http_get(port) {
                break body;
            }
            assert!(Instant::now() < end, "{mode}: no HTTP 200 from the Flask app");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(page.starts_with("hello from a tote bundle"), "{mode}: {page}");
        assert!(page.contains("uid 65534"), "{mode}: {page}");
        // To the bundle (bwrap's child), as Nomad sends its kill signal.
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        for pid in kids.split_whitespace() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                nix::sys::signal::Signal::SIGINT,
            )
            .unwrap();
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("hello-flask: stopped"),
            "{mode}"
        );
        let fetched = nginx.bytes_since(before);
        assert!(
            fetched > 144 && fetched <= data_len(&flask_full) + 144,
            "{mode}: {fetched}"
        );
    }
}

/// A host that refuses threads (clone3 refused by seccomp): a thin
/// bundle's extraction fetches its blocks on its own thread, each once,
/// and never panics.
#[test]
fn with_no_threads_a_thin_bundle_fetches_on_its_own_thread() {
    let t = TestDir::new();
    let nginx = Nginx::start(&t);
    let full = demo(&t, "demo", "hello without threads");
    nginx.upload(&full, "demo");
    let app = t.join("demo-thin");
    thin(&full, &nginx.url("demo"), &app, &[]);
    let data_len: u64 = bundle_index(&full).blocks.iter().map(|b| u64::from(b.clen)).sum();
    let o = Command::new(&crate::relocate::tools().refuse)
        .arg("seccomp")
        .arg(crate::relocate::filter("nothreads"))
        .arg(&app)
        .env("TOTE_CACHE_DIR", t.join("cache"))
        .env("TOTE_MODE", "extract")
        .env_remove("TOTE_REMOTE_URL")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked") && o.status.code() != Some(134), "{e}");
    assert!(o.status.success(), "{e}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello without threads\n"));
    assert_eq!(nginx.bytes_since(0), data_len + 144, "{:?}", nginx.served());
}
