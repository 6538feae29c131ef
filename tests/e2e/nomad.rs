//! The deploy path: a Flask app built with Nix -> `tote bundle` -> a real S3
//! server (Garage) through a real client (the AWS CLI) -> `tote nomad` ->
//! the exec-driver stand-in (scripts/nomad-exec-sim) -> HTTP 200 -> SIGINT.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::*;

/// A single-node Garage from `scripts/garage`, stopped on drop.
pub(crate) struct Garage {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Garage {
    pub(crate) fn start(t: &TestDir) -> Garage {
        let dir = t.join("garage");
        let o = Command::new(repo().join("scripts/garage"))
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "scripts/garage start: {}", stderr(&o));
        let env = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Garage { dir, env }
    }
    pub(crate) fn var(&self, k: &str) -> String {
        field(&self.env, k)
    }
    /// The AWS CLI with the read-write key (the endpoint as an option: older
    /// CLIs, such as Debian's 2.9, ignore AWS_ENDPOINT_URL).
    fn aws(&self, args: &[&str]) -> std::process::Output {
        let aws = if Path::new("/usr/bin/aws").exists() {
            "/usr/bin/aws"
        } else {
            "aws"
        };
        Command::new(aws)
            .args(["--endpoint-url", &self.var("AWS_ENDPOINT_URL")])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap()
    }
    pub(crate) fn upload(&self, file: &Path, key: &str) {
        let o = self.aws(&[
            "s3",
            "cp",
            "--only-show-errors",
            file.to_str().unwrap(),
            &format!("s3://{}/{key}", self.var("TOTE_BUCKET")),
        ]);
        assert!(o.status.success(), "aws s3 cp: {}", stderr(&o));
    }
    /// `tote nomad FILE --url s3://tote/KEY --endpoint ...` with the read-only key.
    pub(crate) fn job(&self, file: &Path, key: &str, extra: &[&str]) -> String {
        let o = tote()
            .arg("nomad")
            .arg(file)
            .args(["--url", &format!("s3://{}/{key}", self.var("TOTE_BUCKET"))])
            .args(["--endpoint", &self.var("AWS_ENDPOINT_URL"), "--region", "garage"])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", self.var("TOTE_READ_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", self.var("TOTE_READ_SECRET"))
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .unwrap();
        assert!(o.status.success(), "tote nomad: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/garage"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

pub(crate) fn sim_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("nomad-exec-sim");
    assert!(
        p.exists(),
        "{} is missing: cargo build -p nomad-exec-sim (scripts/test does)",
        p.display()
    );
    p
}

/// A running stand-in, with its report lines as they come.
pub(crate) struct Task {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    pub(crate) ns: String,
    started: Instant,
}

impl Task {
    fn start(job: &Path, alloc: &Path) -> Task {
        Task::start_with(job, alloc, &[])
    }

    /// The stand-in with more options (`--seccomp FILE`).
    pub(crate) fn start_with(job: &Path, alloc: &Path, extra: &[&OsStr]) -> Task {
        let mut child = Command::new(sim_binary())
            .arg(job)
            .arg("--alloc-dir")
            .arg(alloc)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut t = Task {
            child,
            lines,
            seen: Vec::new(),
            ns: String::new(),
            started: Instant::now(),
        };
        let l = t.wait_for("started: pid", Duration::from_secs(120));
        t.started = Instant::now();
        t.ns = l
            .split("PID namespace ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        t
    }

    pub(crate) fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no {needle:?} from nomad-exec-sim; saw {:#?}", self.seen),
            }
        }
    }

    /// SIGINT to the stand-in (`nomad alloc stop`); its exit status and report.
    pub(crate) fn stop(mut self) -> (i32, Vec<String>) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < end,
                "nomad-exec-sim did not exit; saw {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.extend(self.lines.try_iter());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }
}

/// A failed assertion must not leave the stand-in (and so the task: it dies
/// with the stand-in) running.
impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn pid_ns_members(ns: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
        .count()
}

pub(crate) fn http_get(port: u16) -> Option<(u32, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
}

/// Poll until the page answers 200: the time since the task started, and the page.
pub(crate) fn first_200(task: &Task, port: u16) -> (Duration, String) {
    while task.started.elapsed() < Duration::from_secs(120) {
        if let Some((200, body)) = http_get(port) {
            return (task.started.elapsed(), body);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no HTTP 200 on port {port}; saw {:#?}", task.seen)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256(p: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(p).unwrap()))
}

fn hcl_str<'a>(body: &'a hcl::Body, key: &str) -> &'a str {
    match body.attributes().find(|a| a.key() == key).map(|a| a.expr()) {
        Some(hcl::Expression::String(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

fn hcl_block<'a>(body: &'a hcl::Body, id: &str) -> &'a hcl::Block {
    body.blocks()
        .find(|b| b.identifier() == id)
        .unwrap_or_else(|| panic!("no {id} block"))
}

/// The Flask example built, bundled, uploaded to a local Garage, and its
/// Nomad job for `port`: the running Garage, the bundle, the job's text.
pub(crate) fn flask_job(t: &TestDir, port: u16) -> (Garage, PathBuf, String) {
    flask_job_of(t, &flask_app(), port)
}

/// The Flask example, built: its store path.
pub(crate) fn flask_app() -> String {
    let out = Command::new("nix-build")
        .arg(repo().join("examples/hello-flask"))
        .args(["--no-out-link", "--quiet", "--option", "sandbox", "false"])
        .args(["--option", "build-users-group", "", "--option", "substituters", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build examples/hello-flask: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The same for the Flask app's store path `app`.
pub(crate) fn flask_job_of(t: &TestDir, app: &str, port: u16) -> (Garage, PathBuf, String) {
    let file = t.join("hello-flask");
    bundle(app, &file, &["--level", "3"]);
    let garage = Garage::start(t);
    garage.upload(&file, "apps/hello-flask");
    let text = garage.job(&file, "apps/hello-flask", &["--port", &format!("http={port}")]);
    (garage, file, text)
}

/// The Flask job under the stand-in (`extra`: its options), as `run`: the
/// time from the task's start to the first HTTP 200 and the page, checked
/// to come from uid 65534 with the bundle as PID 1; then `nomad alloc
/// stop`: Flask exits 0 on SIGINT within kill_timeout, nothing left.
pub(crate) fn serve_then_stop(job: &Path, alloc: &Path, port: u16, extra: &[&OsStr], run: &str) -> (Duration, String) {
    let task = Task::start_with(job, alloc, extra);
    let (took, page) = first_200(&task, port);
    for want in [
        "uid 65534 ",
        "parent 1\n", // the bundle is PID 1 and the program its child
    ] {
        assert!(page.contains(want), "{run}: no {want:?} in the page:\n{page}");
    }
    assert!(
        pid_ns_members(&task.ns) >= 2,
        "{run}: the bundle and the app run in the task's PID namespace"
    );
    let ns = task.ns.clone();
    let (code, report) = task.stop();
    let report = report.join("\n");
    assert_eq!(code, 0, "{run}: Flask exits 0 on SIGINT:\n{report}");
    assert!(report.contains("task exited: exit code 0"), "{report}");
    assert!(
        report.contains("ms after SIGINT"),
        "{run}: stopped within kill_timeout:\n{report}"
    );
    assert!(!report.contains("SIGKILL"), "{report}");
    assert!(report.contains("processes left: 0"), "{report}");
    assert_eq!(pid_ns_members(&ns), 0, "{run}: a process outlived the task");
    (took, page)
}

#[test]
fn flask_app_goes_through_s3_and_runs_under_the_exec_driver() {
    let t = TestDir::new();
    let port = free_port();
    let (garage, file, text) = flask_job(&t, port);

    // The job, read back with a real HCL parser.
    let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let job = hcl_block(&body, "job");
    assert_eq!(job.labels()[0].as_str(), "hello-flask");
    let group = hcl_block(job.body(), "group");
    let port_block = hcl_block(hcl_block(group.body(), "network").body(), "port");
    assert_eq!(port_block.labels()[0].as_str(), "http");
    let task = hcl_block(group.body(), "task").body();
    assert_eq!(hcl_str(task, "driver"), "exec");
    assert_eq!(hcl_str(task, "kill_signal"), "SIGINT");
    let artifact = hcl_block(task, "artifact").body();
    assert_eq!(
        hcl_str(artifact, "source"),
        format!(
            "s3::{}/tote/apps/hello-flask?region=garage",
            garage.var("AWS_ENDPOINT_URL")
        )
    );
    assert_eq!(hcl_str(artifact, "mode"), "file");
    assert_eq!(hcl_str(artifact, "destination"), "local/hello-flask");
    let options = hcl_block(artifact, "options").body();
    assert_eq!(hcl_str(options, "checksum"), format!("sha256:{}", sha256(&file)));
    assert_eq!(hcl_str(options, "aws_access_key_id"), garage.var("TOTE_READ_KEY_ID"));
    assert_eq!(
        hcl_str(hcl_block(task, "config").body(), "command"),
        "local/hello-flask"
    );
    let job_file = t.join("hello-flask.nomad.hcl");
    std::fs::write(&job_file, &text).unwrap();

    // Cold: a new allocation, an empty cache in the task's /tmp.
    let alloc = t.join("alloc");
    let mut timings = Vec::new();
    for run in ["cold", "warm"] {
        let (took, page) = serve_then_stop(&job_file, &alloc, port, &[], run);
        timings.push((run, took));
        for want in [
            "hello from a tote bundle under Nomad",
            "task hello-flask in /local",
            "HOME /nonexistent TMPDIR -",
            "/dev/fuse absent",
        ] {
            assert!(page.contains(want), "{run}: no {want:?} in the page:\n{page}");
        }
    }
    eprintln!(
        "nomad e2e: first HTTP 200 {} ms after task start (cold), {} ms (warm)",
        timings[0].1.as_millis(),
        timings[1].1.as_millis()
    );

    // What the fetch left: the checked bytes, r-x for all, no setuid bits.
    let local = alloc.join("hello-flask/local/hello-flask");
    let meta = std::fs::metadata(&local).unwrap();
    assert_eq!(sha256(&local), sha256(&file));
    assert_eq!(meta.permissions().mode() & 0o555, 0o555);
    assert_eq!(meta.permissions().mode() & 0o6000, 0);
    // The cache lives in the task's own /tmp, owned by nobody.
    let cache = alloc.join("hello-flask/tmp/tote-65534");
    assert_eq!(std::fs::metadata(&cache).unwrap().uid(), NOBODY);
}

/// A busybox bundle (a directory, no namespace) as the task's program.
fn busybox_bundle(t: &TestDir) -> PathBuf {
    let dir = t.join("bb");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let file = t.join("busybox");
    bundle(dir.to_str().unwrap(), &file, &["--entrypoint", "bin/busybox"]);
    file
}

#[test]
fn a_program_that_ignores_sigint_is_killed_after_kill_timeout_with_its_children() {
    let t = TestDir::new();
    let file = busybox_bundle(&t);
    let garage = Garage::start(&t);
    garage.upload(&file, "busybox");
    // A shell that ignores SIGINT and leaves a grandchild behind.
    let script = "trap '' INT; sleep 1000 & sleep 1000; echo not reached";
    let text = garage
        .job(&file, "busybox", &["--", "sh", "-c", script])
        .replace("kill_timeout = \"5s\"", "kill_timeout = \"1s\"");
    let job_file = t.join("busybox.nomad.hcl");
    std::fs::write(&job_file, &text).unwrap();
    let task = Task::start(&job_file, &t.join("alloc"));
    let ns = task.ns.clone();
    let end = Instant::now() + Duration::from_secs(30);
    while pid_ns_members(&ns) < 4 {
        assert!(Instant::now() < end, "the stub, sh and two sleeps never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, report) = task.stop();
    let report = report.join("\n");
    assert!(report.contains("kill_timeout passed: sending SIGKILL"), "{report}");
    assert_eq!(code, 128 + 9, "{report}");
    assert!(report.contains("task exited: killed by SIGKILL"), "{report}");
    assert!(report.contains("processes left: 0"), "{report}");
    assert_eq!(pid_ns_members(&ns), 0);
}

#[test]
fn the_fetch_refuses_a_wrong_checksum_and_a_source_without_credentials() {
    let t = TestDir::new();
    let file = busybox_bundle(&t);
    let garage = Garage::start(&t);
    garage.upload(&file, "busybox");
    let text = garage.job(&file, "busybox", &["--", "true"]);
    let sum = sha256(&file);
    let sim = |name: &str, text: &str| {
        let job = t.join(name);
        std::fs::write(&job, text).unwrap();
        let alloc = t.join(format!("alloc-{name}"));
        let o = Command::new(sim_binary())
            .arg(&job)
            .arg("--alloc-dir")
            .arg(&alloc)
            .output()
            .unwrap();
        (o, alloc.join("busybox/local"))
    };
    let (o, local) = sim("ok.hcl", &text);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256(&local.join("busybox")), sum);

    let bad = text.replace(&sum, &"0".repeat(64));
    let (o, local) = sim("bad-sum.hcl", &bad);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("checksums did not match"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&local).unwrap().count(),
        0,
        "nothing is left in local/"
    );

    let no_key: String = text
        .lines()
        .filter(|l| !l.contains("aws_access_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (o, _) = sim("no-key.hcl", &no_key);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("would send this request to AWS"), "{}", stderr(&o));
}

#[test]
fn nomad_jobs_parse_back_with_every_value_intact() {
    let t = TestDir::new();
    let file = busybox_bundle(&t);
    let args = ["say \"hi\"", "${HOME} %{x} \\ end", "two\nlines"];
    let o = tote()
        .arg("nomad")
        .arg(&file)
        .args([
            "--url",
            "https://files.example.com/busybox",
            "--job",
            "bb.v2",
            "--cpu",
            "250",
        ])
        .args([
            "--memory",
            "64",
            "--port",
            "http",
            "--port",
            "admin=9001",
            "--datacenter",
            "eu1",
        ])
        .args(["--env", "GREETING=${not interpolated}", "--"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "no note without credentials");
    let text = String::from_utf8(o.stdout).unwrap();
    let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let job = hcl_block(&body, "job");
    assert_eq!(job.labels()[0].as_str(), "bb.v2");
    let group = hcl_block(job.body(), "group");
    let ports: Vec<(String, Option<String>)> = hcl_block(group.body(), "network")
        .body()
        .blocks()
        .map(|p| {
            let fixed = p
                .body()
                .attributes()
                .find(|a| a.key() == "static")
                .map(|a| a.expr().to_string());
            (p.labels()[0].as_str().to_owned(), fixed)
        })
        .collect();
    assert_eq!(
        ports,
        [("http".to_owned(), None), ("admin".to_owned(), Some("9001".to_owned()))]
    );
    let task = hcl_block(group.body(), "task").body();
    let artifact = hcl_block(task, "artifact").body();
    assert_eq!(hcl_str(artifact, "source"), "https://files.example.com/busybox");
    let config = hcl_block(task, "config").body();
    let parsed: Vec<String> = match config.attributes().find(|a| a.key() == "args").map(|a| a.expr()) {
        Some(hcl::Expression::Array(items)) => items
            .iter()
            .map(|e| match e {
                hcl::Expression::String(s) => s.clone(),
                // `$${` and `%%{` escapes make a template with no interpolation.
                hcl::Expression::TemplateExpr(t) => {
                    let tpl = hcl::Template::from_expr(t).unwrap();
                    assert!(tpl
                        .elements()
                        .iter()
                        .all(|e| matches!(e, hcl::template::Element::Literal(_))));
                    tpl.to_string()
                }
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("args: {other:?}"),
    };
    assert_eq!(parsed, args);
    let resources = hcl_block(task, "resources").body();
    let num = |k: &str| {
        resources
            .attributes()
            .find(|a| a.key() == k)
            .unwrap()
            .expr()
            .to_string()
    };
    assert_eq!((num("cpu"), num("memory")), ("250".to_owned(), "64".to_owned()));

    // Mistakes: one line, exit 1, nothing on stdout.
    for (extra, msg) in [
        (vec!["--url", "ftp://h/x"], "ftp:// scheme is not supported"),
        (vec!["--url", "s3://bucket"], "expected s3://BUCKET/KEY"),
        (
            vec!["--url", "s3://b/k", "--endpoint", "http://127.0.0.1:1"],
            "set AWS_ACCESS_KEY_ID",
        ),
        (vec!["--url", "https://h/x", "--port", "a=b"], "not a port number"),
        (vec!["--url", "https://h/x", "--env", "1X=y"], "not a variable name"),
    ] {
        let o = tote()
            .arg("nomad")
            .arg(&file)
            .args(&extra)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        assert!(o.stdout.is_empty(), "{extra:?}");
        let err = stderr(&o);
        assert!(err.contains(msg) && err.lines().count() == 1, "{extra:?}: {err}");
    }
    let o = tote()
        .args(["nomad", "/etc/hostname", "--url", "https://h/x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/etc/hostname"), "{}", stderr(&o));
}
