//! Host ELF programs: a C program with its own libraries (RUNPATH with
//! $ORIGIN, a chain of DT_NEEDED), a dlopen'ed plugin brought in with --add,
//! and Debian's Python with its standard library. They run in a busybox
//! root without glibc, and on this host without picking up its libraries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const LIB_B: &str = "int b_value(void) { return 2; }\n";
const LIB_A: &str = "int b_value(void);\nint a_value(void) { return b_value() + 40; }\n";
const PLUGIN: &str = "const char *plugin_name(void) { return \"plugin-ok\"; }\n";
const PROG: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int a_value(void);
static void *worker(void *arg) { pthread_exit(arg); }
int main(int argc, char **argv) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    printf("exe=%s\n", buf);
    printf("a=%d\n", a_value());
    printf("cbrt=%.0f\n", cbrt(atof(argc > 1 ? argv[1] : "27")));
    Dl_info info;
    printf("liba=%s\n", dladdr((void *)a_value, &info) ? info.dli_fname : "?");
    printf("libc=%s\n", dladdr((void *)printf, &info) ? info.dli_fname : "?");
    struct passwd *pw = getpwuid(getuid());
    printf("user=%s\n", pw ? pw->pw_name : "(none)");
    /* glibc unwinds the thread through libgcc_s, which it dlopens. */
    pthread_t t;
    void *got = 0;
    if (pthread_create(&t, 0, worker, (void *)42) == 0) pthread_join(t, &got);
    printf("thread=%ld\n", (long)got);
    if (argc > 2) {
        void *h = dlopen(argv[2], RTLD_NOW);
        const char *(*name)(void) = h ? (const char *(*)(void))dlsym(h, "plugin_name") : 0;
        printf("plugin=%s\n", name ? name() : dlerror());
    }
    return 0;
}
"#;

fn cc(args: &[&str], cwd: &Path) {
    let o = Command::new("gcc").args(args).current_dir(cwd).output().unwrap();
    assert!(
        o.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `app/bin/prog` -> `app/lib/liba.so` -> `app/lib/libb.so`, found through
/// RUNPATH `$ORIGIN/../lib` and `$ORIGIN`; libm and libc from the host's
/// default directories; `plugins/libplugin.so` only by dlopen.
fn c_program(t: &TestDir) -> PathBuf {
    let src = t.join("src");
    let app = t.join("app");
    for d in [&src, &app.join("bin"), &app.join("lib"), &t.join("plugins")] {
        fs::create_dir_all(d).unwrap();
    }
    for (name, text) in [("b.c", LIB_B), ("a.c", LIB_A), ("plugin.c", PLUGIN), ("prog.c", PROG)] {
        fs::write(src.join(name), text).unwrap();
    }
    let lib = app.join("lib");
    let lib = lib.to_str().unwrap();
    cc(&["-shared", "-fPIC", "-o", &format!("{lib}/libb.so"), "b.c"], &src);
    cc(
        &[
            "-shared",
            "-fPIC",
            "-o",
            &format!("{lib}/liba.so"),
            "a.c",
            "-L",
            lib,
            "-lb",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN",
        ],
        &src,
    );
    let plugins = t.join("plugins");
    cc(
        &[
            "-shared",
            "-fPIC",
            "-o",
            plugins.join("libplugin.so").to_str().unwrap(),
            "plugin.c",
        ],
        &src,
    );
    let prog = app.join("bin/prog");
    cc(
        &[
            "-O2",
            "-o",
            prog.to_str().unwrap(),
            "prog.c",
            "-L",
            lib,
            "-la",
            "-lm",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
        ],
        &src,
    );
    prog
}

fn bundle_elf(t: &TestDir, program: &Path, extra: &[&str]) -> PathBuf {
    let out = t.join("bundle");
    let o = tote()
        .arg("bundle")
        .arg(program)
        .args(["--level", "3", "-o"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn kv(out: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[test]
fn a_c_program_with_its_libraries_runs_without_glibc() {
    let t = TestDir::new();
    let prog = c_program(&t);
    let plugin = t.join("plugins/libplugin.so");
    let out = bundle_elf(&t, &prog, &["--add", plugin.parent().unwrap().to_str().unwrap()]);
    // The originals change after bundling: only the bundle's copies may run.
    fs::write(t.join("app/lib/liba.so"), "not a library any more").unwrap();
    fs::write(&plugin, "not a plugin any more").unwrap();

    let plugin_s = plugin.to_str().unwrap();
    for user in USERS {
        let o = in_busybox_root(&t, &out, &["64", plugin_s], user);
        assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
        let r = kv(&o.stdout);
        assert_eq!(
            field(&r, "exe"),
            prog.to_str().unwrap(),
            "/proc/self/exe is the program, not ld.so"
        );
        assert_eq!(field(&r, "a"), "42");
        assert_eq!(field(&r, "cbrt"), "4");
        assert_eq!(field(&r, "liba"), t.join("app/bin/../lib/liba.so").to_str().unwrap());
        assert!(field(&r, "libc").ends_with("/libc.so.6"));
        assert_eq!(field(&r, "plugin"), "plugin-ok");
        // glibc found libgcc_s (no DT_NEEDED names it) to end the thread.
        assert_eq!(field(&r, "thread"), "42", "{}", stderr(&o));
        // No /etc/passwd in the busybox root: NSS finds nobody, and says so.
        assert_eq!(field(&r, "user"), "(none)");
    }
    // On this host too (the in-place view), as root and as nobody.
    let l = Launch::nobody(&t);
    let r = kv(&l.run(&out, &["8", plugin_s]).stdout);
    assert_eq!(
        (field(&r, "a"), field(&r, "cbrt"), field(&r, "plugin")),
        ("42".into(), "2".into(), "plugin-ok".into())
    );
    assert_eq!(field(&r, "user"), "nobody", "the host's /etc/passwd is visible");
    let r = kv(&Launch::root(&t).run(&out, &[]).stdout);
    assert_eq!((field(&r, "a"), field(&r, "user")), ("42".into(), "root".into()));
}

#[test]
fn the_hosts_ld_so_cache_and_nss_modules_are_not_used() {
    let t = TestDir::new();
    let prog = c_program(&t);
    let out = bundle_elf(&t, &prog, &[]);
    // A host whose ld.so.cache and nsswitch.conf name a module that announces
    // itself when loaded.
    let evil = t.join("evil");
    fs::create_dir(&evil).unwrap();
    fs::write(
        t.join("src/evil.c"),
        "#include <unistd.h>\n__attribute__((constructor)) static void hello(void) { write(2, \"EVIL-LOADED\\n\", 12); }\n\
         int _nss_evil_getpwuid_r(void) { return 0; }\n",
    )
    .unwrap();
    cc(
        &[
            "-shared",
            "-fPIC",
            "-o",
            evil.join("libnss_evil.so.2").to_str().unwrap(),
            "evil.c",
        ],
        &t.join("src"),
    );
    fs::write(t.join("ld.so.conf"), format!("{}\n", evil.display())).unwrap();
    let cache = t.join("ld.so.cache");
    let o = Command::new("ldconfig")
        .arg("-X")
        .arg("-C")
        .arg(&cache)
        .arg("-f")
        .arg(t.join("ld.so.conf"))
        .output()
        .unwrap();
    assert!(o.status.success(), "ldconfig: {}", stderr(&o));
    fs::write(t.join("nsswitch.conf"), "passwd: evil files\ngroup: files\n").unwrap();
    let view = |cmd: &[&str]| {
        Command::new("bwrap")
            .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--ro-bind"])
            .arg(&cache)
            .arg("/etc/ld.so.cache")
            .arg("--ro-bind")
            .arg(t.join("nsswitch.conf"))
            .args(["/etc/nsswitch.conf", "--"])
            .args(cmd)
            .env("TOTE_CACHE_DIR", t.join("cache"))
            .output()
            .unwrap()
    };
    // The setup works: the host's own programs load the module.
    let host = view(&["getent", "passwd", "root"]);
    assert!(stderr(&host).contains("EVIL-LOADED"), "test setup: {}", stderr(&host));
    // The bundled program does not, and still resolves users from files.
    let o = view(&[out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("EVIL-LOADED"), "{}", stderr(&o));
    assert_eq!(field(&kv(&o.stdout), "user"), "root");
}

#[test]
fn python_with_its_standard_library_runs_without_glibc() {
    let t = TestDir::new();
    let out = bundle_elf(&t, Path::new("/usr/bin/python3.11"), &["--add", "/usr/lib/python3.11"]);
    let code = "import sys, os, json, hashlib, ssl, sqlite3, ctypes\n\
                print('exe=' + os.path.realpath('/proc/self/exe'))\n\
                print('prefix=' + sys.prefix)\n\
                print('json=' + json.dumps({'a': [1, 2]}))\n\
                print('sha=' + hashlib.sha256(b'tote').hexdigest()[:12])\n\
                print('ssl=' + ssl.OPENSSL_VERSION.split()[0])\n\
                print('args=' + ','.join(sys.argv[1:]))";
    for user in USERS {
        let o = in_busybox_root(&t, &out, &["-c", code, "x", "y z"], user);
        assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
        let r = kv(&o.stdout);
        assert_eq!(field(&r, "exe"), "/usr/bin/python3.11");
        assert_eq!(field(&r, "prefix"), "/usr");
        assert_eq!(field(&r, "json"), r#"{"a": [1, 2]}"#);
        use sha2::Digest;
        assert_eq!(field(&r, "sha"), hex(&sha2::Sha256::digest(b"tote"))[..12]);
        assert_eq!(field(&r, "ssl"), "OpenSSL");
        assert_eq!(field(&r, "args"), "x,y z");
    }
}

#[test]
fn bad_elf_inputs_are_refused() {
    let t = TestDir::new();
    // An ELF for an architecture tote does not bundle for: a copy of a
    // real one with e_machine set to RISC-V (243).
    let mut bytes = fs::read("/bin/busybox").unwrap();
    bytes[18..20].copy_from_slice(&243u16.to_le_bytes());
    let rv = t.join("riscv-prog");
    fs::write(&rv, &bytes).unwrap();
    let o = tote().arg("bundle").arg(&rv).current_dir(t.path()).output().unwrap();
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(1), 1), "{e}");
    assert!(
        e.contains("is an ELF file for") && e.contains("tote bundles x86_64 and aarch64 programs"),
        "{e}"
    );

    // A library that cannot be found.
    let prog = c_program(&t);
    fs::remove_file(t.join("app/lib/libb.so")).unwrap();
    let o = tote().arg("bundle").arg(&prog).current_dir(t.path()).output().unwrap();
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(1), 1), "{e}");
    assert!(e.contains("needs libb.so") && e.contains("--add"), "{e}");
    let o = tote()
        .arg("bundle")
        .arg(&prog)
        .args(["--add", "/nonexistent/x"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("--add /nonexistent/x: no such file"),
        "{}",
        stderr(&o)
    );
    assert!(!t.join("prog").exists() && !t.join("arm-prog.tote").exists());
}
