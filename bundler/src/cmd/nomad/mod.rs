//! `tote nomad`: a Nomad job specification that downloads a bundle and runs it
//! with the `exec` driver.
//!
//! The artifact block follows what go-getter (Nomad's downloader) does with
//! a source URL:
//! - `s3::` sources whose host is not `*.amazonaws.com` are sent to that host,
//!   path-style, *only when the credentials are in the URL* (the artifact's
//!   `options`); without them go-getter asks AWS. So a custom endpoint (MinIO,
//!   Garage...) gets `aws_access_key_id`/`aws_access_key_secret` options,
//!   taken from this process's environment.
//! - `options { checksum = "sha256:<hex>" }` is checked before the task starts.

mod hcl;
mod source;

use anyhow::{bail, Context, Result};

use crate::reader;
use hcl::render;
use source::source;

pub const HELP: &str = "The job downloads FILE with an artifact block (mode \"file\", destination
local/<FILE's name>, its sha256 checksum) and runs it with driver \"exec\".

Examples:
  aws s3 cp app s3://releases/app
  tote nomad app --url s3://releases/app --port http=8080 > app.nomad.hcl
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
    tote nomad app --url s3://releases/app --endpoint http://minio:9000 --region us-east-1
  tote nomad app --url https://files.example.com/app -- --listen 0.0.0.0:8080
  nomad job run app.nomad.hcl";

/// Arguments of `tote nomad`.
#[derive(clap::Args)]
pub struct Args {
    /// The bundle to run (its SHA-256 goes into the job); or one bundle per
    /// architecture of the same app, each run on the clients of its own.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Where Nomad downloads FILE from: s3://BUCKET/KEY (AWS, or the server
    /// given by --endpoint), an http(s) URL, or a go-getter source (s3::...).
    /// Once per FILE, in the same order.
    #[arg(long, value_name = "URL", required = true)]
    pub url: Vec<String>,
    /// S3-compatible server for an s3:// URL (MinIO, Garage, Ceph...), such as
    /// http://minio.internal:9000. Its credentials are read from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and written into the job.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket (for --endpoint: the server's region name, e.g.
    /// "garage" for Garage's default).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Job, group and task name [default: the bundle's name].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Datacenters the job may run in [default: "*", every datacenter].
    #[arg(long = "datacenter", value_name = "DC")]
    pub datacenters: Vec<String>,
    /// CPU to reserve, in MHz.
    #[arg(long, value_name = "MHZ", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cpu: u32,
    /// Memory limit, in MB. Bundles extract to disk, not memory.
    #[arg(long, value_name = "MB", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(10..))]
    pub memory: u32,
    /// A port the program listens on: LABEL=PORT for a static port, LABEL
    /// alone for one Nomad picks. The program reads it from NOMAD_PORT_<LABEL>.
    #[arg(long = "port", value_name = "LABEL[=PORT]")]
    pub ports: Vec<String>,
    /// An environment variable for the program (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Share warm cache entries between the allocations on a client: mount
    /// the client's host volume NAME (a directory owned by the task's user,
    /// mode 0700) at /tote-cache and set TOTE_CACHE_DIR to it.
    #[arg(long, value_name = "NAME")]
    pub cache_volume: Option<String>,
    /// Trim the cache to SIZE after cold starts (TOTE_CACHE_MAX in the job's
    /// env), e.g. 5G: size the host volume for it.
    #[arg(long, value_name = "SIZE", value_parser = cache_max)]
    pub cache_max: Option<String>,
    /// Refuse to write the job unless every FILE is signed by enough of
    /// these keys (NAME:BASE64, or a file of them; repeatable).
    #[arg(long, value_name = "KEY|FILE")]
    pub trusted_keys: Vec<String>,
    /// How many trusted keys must have signed [default: 1, or the files'].
    #[arg(long, value_name = "N", requires = "trusted_keys",
          value_parser = clap::value_parser!(u32).range(1..=32))]
    pub sigs_needed: Option<u32>,
    /// Run the bundle through the client's own tote (`tote run`, from PATH
    /// in the client's chroot; the exec driver wants it absolute): for
    /// clients that must refuse unsigned code. Their keys go in
    /// /etc/tote/trusted-keys.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/usr/local/bin/tote")]
    pub tote_run: Option<String>,
    /// Arguments for the program, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Everything a job specification is made of, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub datacenters: Vec<String>,
    /// One bundle per architecture: a group each.
    pub builds: Vec<Build>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<(String, Option<u16>)>,
    pub cpu: u32,
    pub memory: u32,
    /// `--cache-volume`: the host volume mounted at [`CACHE_DIR`].
    pub cache_volume: Option<String>,
    /// `--tote-run`: the client's tote, which runs the bundle.
    pub tote_run: Option<String>,
}

/// One bundle of the job: what it runs on, and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub arch: tote_format::Arch,
    /// The bundle, as named on the command line.
    pub file: std::path::PathBuf,
    /// The go-getter source.
    pub source: String,
    /// Artifact options besides the checksum (credentials).
    pub options: Vec<(String, String)>,
    /// `sha256:<hex>`.
    pub checksum: String,
    /// The artifact's file name in `local/`.
    pub file_name: String,
    /// A thin bundle: where its blocks are fetched from at launch.
    pub remote: Option<tote_format::Location>,
}

/// Where `--cache-volume` mounts the host volume in the task.
pub const CACHE_DIR: &str = "/tote-cache";

/// `--cache-max`: a size as the stub reads TOTE_CACHE_MAX, kept as written.
fn cache_max(s: &str) -> std::result::Result<String, String> {
    tote_cache::parse_size(s).map(|_| s.trim().to_owned())
}

/// The default kill signal and timeout, written out so that the job says
/// what stops the program.
pub const KILL_SIGNAL: &str = "SIGINT";
pub const KILL_TIMEOUT: &str = "5s";

pub fn run(args: &Args) -> Result<()> {
    if args.url.len() != args.files.len() {
        bail!(
            "{} bundles and {} --url: give one --url per bundle, in the same order",
            args.files.len(),
            args.url.len()
        );
    }
    let mut name = args.job.clone();
    let mut builds: Vec<Build> = Vec::new();
    let mut warned = false;
    for (file, url) in args.files.iter().zip(&args.url) {
        let opened = reader::open(file)?;
        let meta = opened
            .layout
            .meta(&opened.map)
            .with_context(|| format!("{}", file.display()))?;
        if !args.trusted_keys.is_empty() {
            let policy = crate::signing::policy_from_args(&args.trusted_keys, args.sigs_needed.map(|n| n as usize))?;
            let verdict = crate::signing::check(&opened.layout, &opened.map, &policy, crate::signing::now());
            if let Some(why) = verdict.refused {
                bail!("{}: not trusted, no job written: {why}", file.display());
            }
        }
        let checksum = format!("sha256:{}", reader::sha256_hex(&opened.map));
        let remote = opened.layout.remote.as_ref().map(|r| r.location.clone());
        drop(opened);
        if let Some(other) = builds.iter().find(|b| b.arch == meta.arch) {
            bail!(
                "{} and {} are both for {}: give one bundle per architecture",
                other.file.display(),
                file.display(),
                meta.arch
            );
        }
        name.get_or_insert_with(|| meta.name.clone());
        let (source, options) = download(args, url, &mut warned)?;
        builds.push(Build {
            arch: meta.arch,
            file: file.clone(),
            source,
            options,
            checksum,
            file_name: file_name(file),
            remote,
        });
    }
    let name = name.unwrap_or_default();
    check_name(&name, args.job.is_some())?;
    if let Some(p) = args.tote_run.as_deref().filter(|p| !p.starts_with('/')) {
        bail!("--tote-run {p}: give tote's absolute path on the clients (Nomad's exec driver runs host programs by absolute path)");
    }
    let job = Job {
        name,
        datacenters: if args.datacenters.is_empty() {
            vec!["*".to_owned()]
        } else {
            args.datacenters.clone()
        },
        builds,
        args: args.args.clone(),
        env: job_env(args)?,
        ports: parse_ports(&args.ports)?,
        cpu: args.cpu,
        memory: args.memory,
        cache_volume: args.cache_volume.clone(),
        tote_run: args.tote_run.clone(),
    };
    if job.builds.iter().any(|b| b.remote.is_some()) {
        if job.cache_volume.is_none() {
            eprintln!(
                "tote: note: a thin bundle without --cache-volume fetches its blocks anew in every \
                 allocation (Nomad gives each a fresh task directory)"
            );
        }
        if job
            .builds
            .iter()
            .any(|b| b.remote.as_ref().is_some_and(|r| r.url.starts_with("s3://")))
        {
            eprintln!(
                "tote: note: the task reads the S3 key for the thin bundle's blocks from Nomad variables, \
                 not from the job: nomad var put {} AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
                 (a read-only key)",
                hcl::variables_path(&job)
            );
        }
    }
    print!("{}", render(&job));
    Ok(())
}

/// The go-getter source for `url` and the artifact options it needs
/// (credentials, said once in a note).
fn download(args: &Args, url: &str, warned: &mut bool) -> Result<(String, Vec<(String, String)>)> {
    let env_var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let source = source(url, args.endpoint.as_deref(), args.region.as_deref())?;
    let mut options = Vec::new();
    if source.needs_credentials {
        let (Some(id), Some(secret)) = (env_var("AWS_ACCESS_KEY_ID"), env_var("AWS_SECRET_ACCESS_KEY")) else {
            bail!(
                "{}: Nomad's downloader sends requests for this endpoint to AWS unless the job \
                 holds credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a read-only key)",
                args.endpoint.as_deref().unwrap_or(url)
            );
        };
        options.push(("aws_access_key_id".to_owned(), id.clone()));
        options.push(("aws_access_key_secret".to_owned(), secret));
        if let Some(token) = env_var("AWS_SESSION_TOKEN") {
            options.push(("aws_access_token".to_owned(), token));
        }
        if !std::mem::replace(warned, true) {
            eprintln!("tote: note: the job holds the access key {id}; give it read-only access to the bucket");
        }
    }
    Ok((source.url, options))
}

/// The artifact's file name in `local/`: the bundle's, where it is a plain
/// name, else `app`.
fn file_name(file: &std::path::Path) -> String {
    file.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !n.starts_with('.'))
        .unwrap_or("app")
        .to_owned()
}

fn job_env(args: &Args) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    if let Some(v) = &args.cache_volume {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            bail!("--cache-volume {v:?}: a host volume name is letters, digits, '.', '_' and '-'");
        }
        env.push(("TOTE_CACHE_DIR".to_owned(), CACHE_DIR.to_owned()));
    }
    if let Some(max) = &args.cache_max {
        env.push(("TOTE_CACHE_MAX".to_owned(), max.clone()));
    }
    for e in &args.env {
        let (k, v) = parse_env(e)?;
        if let Some(flag) = match k.as_str() {
            "TOTE_CACHE_DIR" if args.cache_volume.is_some() => Some("--cache-volume"),
            "TOTE_CACHE_MAX" if args.cache_max.is_some() => Some("--cache-max"),
            _ => None,
        } {
            bail!("--env {e:?}: {flag} sets {k} already");
        }
        env.push((k, v));
    }
    Ok(env)
}

fn check_name(name: &str, given: bool) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        if given {
            bail!("--job {name:?}: use letters, digits, '.', '_' and '-'");
        }
        bail!("the bundle's name {name:?} is not a usable job name: give one with --job NAME");
    }
    Ok(())
}

fn parse_env(e: &str) -> Result<(String, String)> {
    let Some((k, v)) = e.split_once('=') else {
        bail!("--env {e:?}: expected NAME=VALUE");
    };
    if !is_identifier(k) {
        bail!("--env {e:?}: {k:?} is not a variable name (letters, digits and '_', not starting with a digit)");
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_ports(ports: &[String]) -> Result<Vec<(String, Option<u16>)>> {
    let mut out: Vec<(String, Option<u16>)> = Vec::new();
    for p in ports {
        let (label, port) = match p.split_once('=') {
            Some((l, n)) => {
                let n: u16 = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--port {p:?}: {n:?} is not a port number (1-65535)"))?;
                (l, Some(n))
            }
            None => (p.as_str(), None),
        };
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--port {p:?}: the label must be letters, digits and '_' (it names NOMAD_PORT_<LABEL>)");
        }
        if out.iter().any(|(l, _)| l == label) {
            bail!("--port {p:?}: the label {label:?} is given twice");
        }
        out.push((label.to_owned(), port));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_env() {
        assert_eq!(
            parse_ports(&["http=8080".into(), "metrics".into()]).unwrap(),
            vec![("http".into(), Some(8080)), ("metrics".into(), None)]
        );
        for (p, msg) in [
            ("http=0", "not a port number"),
            ("http=70000", "not a port number"),
            ("my-port=1", "the label must be"),
            ("=1", "the label must be"),
        ] {
            let err = parse_ports(&[p.into()]).unwrap_err().to_string();
            assert!(err.contains(msg), "{p}: {err}");
        }
        let err = parse_ports(&["a=1".into(), "a=2".into()]).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
        assert_eq!(parse_env("A_1=x=y").unwrap(), ("A_1".into(), "x=y".into()));
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("A").is_err());
        assert!(check_name("hello-flask.v2", false).is_ok());
        assert!(check_name("my app", true).unwrap_err().to_string().contains("--job"));
    }
}
