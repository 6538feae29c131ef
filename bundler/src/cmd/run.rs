//! `tote run`: the host's own tote runs a bundle only after checking it
//! against the host's signing policy, and runs exactly the bytes it
//! checked: the file is opened once, checked through that descriptor, and
//! executed through it (`execveat(fd, "", AT_EMPTY_PATH)`), so replacing
//! the file after the check changes nothing. tote execs the bundle in its
//! own place: same PID (PID 1 stays PID 1), argv, environment and exit
//! status as running the bundle directly.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use tote_cache::trust;
use tote_format::sign::Policy;
use tote_format::{Trailer, MAX_TAIL};

use crate::signing;

pub const HELP: &str = "\
Examples:
  tote run ./app --port 8080
  tote run --trusted-keys builds-1.public ./app
  TOTE_TRUSTED_KEYS='builds-1:BASE64 builds-2:BASE64' tote run ./app

The policy is every one given: --trusted-keys (keys, or files of them), the
file /etc/tote/trusted-keys (root's, not writable by group or others) and
TOTE_TRUSTED_KEYS. With none, tote run refuses. The stub, trailer,
metadata, index and signatures are checked before anything runs; the
blocks are checked by that very stub before it uses them.

A file the caller may not execute (a Nomad artifact: only a job's command
is made executable) runs from a sealed copy in memory, which holds the
bundle's size in memory while it runs.

Exit codes before the bundle runs: 114 the file is not an intact bundle,
117 it could not be executed, 119 its signatures do not meet the policy
(or there is none). After that, the bundle's own.";

/// Refused for want of a trusted signature (the stub's code too).
pub const UNTRUSTED: i32 = 119;
const BUNDLE: i32 = 114;
const EXEC: i32 = 117;

#[derive(clap::Args)]
pub struct Args {
    /// A trusted public key (NAME:BASE64), or a file of them, one policy
    /// line each (repeatable).
    #[arg(long, value_name = "KEY|FILE")]
    trusted_keys: Vec<String>,
    /// How many trusted keys must have signed [default: 1, or the files'].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    sigs_needed: Option<u32>,
    /// The bundle.
    file: PathBuf,
    /// Arguments for the bundle.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (code, err) = match launch(&args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!(
        "{} {}",
        crate::ui::Paint::stderr().error("tote:"),
        tote_format::printable(format!("{err:#}").as_bytes())
    );
    std::process::exit(code)
}

type Fail = (i32, anyhow::Error);

fn launch(args: &Args) -> Result<std::convert::Infallible, Fail> {
    let path = &args.file;
    let shown = path.display();
    let mut policies: Vec<(String, Policy)> = Vec::new();
    if !args.trusted_keys.is_empty() {
        let p = signing::policy_from_args(&args.trusted_keys, args.sigs_needed.map(|n| n as usize))
            .map_err(|e| (UNTRUSTED, e))?;
        policies.push(("--trusted-keys".into(), p));
    }
    let host = trust::host_policies(
        Path::new(trust::POLICY_FILE),
        std::env::var_os(trust::POLICY_VAR).as_deref(),
    )
    .map_err(|e| (UNTRUSTED, anyhow!(e)))?;
    policies.extend(host.into_iter().map(|s| (s.name, s.policy)));
    if policies.is_empty() {
        return Err((
            UNTRUSTED,
            anyhow!(
                "{shown}: no signing policy to check it against: give --trusted-keys, or create {}, or set {}",
                trust::POLICY_FILE,
                trust::POLICY_VAR
            ),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| (BUNDLE, anyhow!("opening {shown}: {e}")))?;
    check_writers(&file, path).map_err(|e| (UNTRUSTED, e))?;
    // A file this user may not execute (a Nomad artifact: only the job's
    // command is made executable) runs from a sealed copy in memory.
    let file = if nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() {
        file
    } else {
        sealed_copy(&file).map_err(|e| (EXEC, anyhow!("{shown}: not executable, and copying it: {e}")))?
    };
    check(&file, path, &policies)?;

    #[cfg(debug_assertions)]
    if let Some(hook) = std::env::var_os("TOTE_TEST_BEFORE_EXEC") {
        // Tests only (debug builds): replace the file between the check and the exec.
        std::env::remove_var("TOTE_TEST_BEFORE_EXEC");
        let _ = std::process::Command::new("/bin/sh").arg("-c").arg(hook).status();
    }

    let cstr = |s: &[u8]| CString::new(s).map_err(|_| (EXEC, anyhow!("{shown}: an argument holds a NUL byte")));
    let mut argv = vec![cstr(path.as_os_str().as_bytes())?];
    for a in &args.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()?;
    let errno = nix::unistd::execveat(&file, c"", &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH)
        .map_or_else(|e| e, |never| match never {});
    Err((EXEC, anyhow!("executing {shown}: {errno} ({})", errno.desc())))
}

/// `file`'s bytes in a sealed memory file: nothing can change them.
fn sealed_copy(file: &File) -> std::io::Result<File> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"tote-run", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut copy = File::from(fd);
    std::io::copy(&mut &*file, &mut copy)?;
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(&copy, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(copy)
}

/// A file someone else can write could change between the check and the
/// exec (in place, on the same inode): refuse one.
fn check_writers(file: &File, path: &Path) -> anyhow::Result<()> {
    let meta = file.metadata().map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{}: not a regular file", path.display());
    }
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0) {
        anyhow::bail!(
            "{}: another user can change it while it is checked (owner uid {}, mode {mode:04o}); chmod go-w it, or \
             give it to root or to uid {me}",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// The bundle as `file` holds it now: intact, and signed as every policy
/// requires.
#[allow(unsafe_code)]
fn check(file: &File, path: &Path, policies: &[(String, Policy)]) -> Result<(), Fail> {
    let shown = path.display();
    let bundle = |e: anyhow::Error| (BUNDLE, e);
    // SAFETY: a private read-only map of the file just opened; a
    // concurrent truncation would end this command with SIGBUS, nothing
    // would run.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| bundle(anyhow!("mapping {shown}: {e}")))?;
    let tail = &map[map.len().saturating_sub(MAX_TAIL)..];
    let layout = Trailer::decode(tail, map.len() as u64).map_err(|e| bundle(anyhow!("{shown}: {e}")))?;
    let meta = layout.meta(&map).map_err(|e| bundle(anyhow!("{shown}: {e}")))?;
    let index = layout.index(&map).map_err(|e| bundle(anyhow!("{shown}: {e}")))?;
    meta.check_stats(&index).map_err(|e| bundle(anyhow!("{shown}: {e}")))?;
    let arch = crate::stub::check(&map[..layout.trailer.data_offset as usize])
        .map_err(|e| bundle(anyhow!("{shown}: stub: {e:#}")))?;
    if arch != meta.arch {
        return Err(bundle(anyhow!(
            "{shown}: the stub is an {arch} program, the bundle is for {}",
            meta.arch
        )));
    }
    let now = signing::now();
    for (source, policy) in policies {
        let verdict = signing::check(&layout, &map, policy, now);
        if let Some(why) = verdict.refused {
            return Err((
                UNTRUSTED,
                anyhow!("{shown}: refused by the signing policy of {source}: {why}"),
            ));
        }
    }
    Ok(())
}
