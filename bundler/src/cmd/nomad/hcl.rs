//! The job specification as HCL text: string literals escaped (with `${`
//! and `%{` kept literal), attributes aligned as `nomad fmt` writes them.

use super::{Build, Job, CACHE_DIR, KILL_SIGNAL, KILL_TIMEOUT};

/// An HCL string literal: escapes, and `${`/`%{` kept literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Attributes aligned on `=`, as `nomad fmt` writes them.
fn attributes(out: &mut String, indent: usize, attrs: &[(&str, String)]) {
    let width = attrs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in attrs {
        out.push_str(&format!("{:indent$}{k:width$} = {v}\n", ""));
    }
}

/// The job specification: one group per bundle, each held to clients of
/// its architecture.
pub fn render(job: &Job) -> String {
    let mut o = String::new();
    let name = quote(&job.name);
    o.push_str("# Runs ");
    let runs: Vec<String> = job
        .builds
        .iter()
        .map(|b| format!("{} ({}, {})", b.file.display(), b.arch.go_name(), b.checksum))
        .collect();
    o.push_str(&runs.join("\n#  and "));
    o.push_str(&format!(
        "\n# with Nomad's exec driver.\n# Written by tote {}: nomad job run <this file>\n",
        env!("CARGO_PKG_VERSION")
    ));
    if job.builds.len() > 1 {
        o.push_str("# One group per architecture, each placed only on clients of its own:\n");
        o.push_str("# `count` is per group, and a group no client can take stays pending.\n");
    }
    o.push_str(&format!("job {name} {{\n"));
    attributes(
        &mut o,
        2,
        &[("datacenters", list(&job.datacenters)), ("type", quote("service"))],
    );
    for b in &job.builds {
        let group = if job.builds.len() > 1 {
            quote(&format!("{}-{}", job.name, b.arch.go_name()))
        } else {
            name.clone()
        };
        group_text(&mut o, job, b, &group, &name);
    }
    o.push_str("}\n");
    o
}

/// One group: `build`'s bundle, on clients of its architecture.
fn group_text(o: &mut String, job: &Job, build: &Build, group: &str, task: &str) {
    o.push_str(&format!("\n  group {group} {{\n"));
    o.push_str("    # The bundle runs on clients of its architecture only.\n");
    o.push_str("    constraint {\n");
    // `${attr.cpu.arch}` is interpolated by Nomad: written as it is.
    attributes(
        o,
        6,
        &[
            ("attribute", "\"${attr.cpu.arch}\"".to_owned()),
            ("value", quote(build.arch.go_name())),
        ],
    );
    o.push_str("    }\n\n");
    if !job.ports.is_empty() {
        o.push_str("    network {\n");
        for (label, port) in &job.ports {
            match port {
                Some(p) => o.push_str(&format!(
                    "      port {} {{\n        static = {p}\n      }}\n",
                    quote(label)
                )),
                None => o.push_str(&format!("      port {} {{}}\n", quote(label))),
            }
        }
        o.push_str("    }\n\n");
    }
    if let Some(v) = &job.cache_volume {
        o.push_str("    # Warm cache entries shared by the allocations on a client. The client\n");
        o.push_str(&format!(
            "    # needs host_volume {} {{ path = \"...\" }}: a directory owned by the\n",
            quote(v)
        ));
        o.push_str("    # task's user (nobody by default), mode 0700, on a disk sized for it.\n");
        o.push_str(&format!("    volume {} {{\n", quote(v)));
        attributes(
            o,
            6,
            &[
                ("type", quote("host")),
                ("source", quote(v)),
                ("read_only", "false".into()),
            ],
        );
        o.push_str("    }\n\n");
    }
    o.push_str(&format!("    task {task} {{\n      driver = \"exec\"\n\n"));
    if let Some(v) = &job.cache_volume {
        o.push_str("      volume_mount {\n");
        attributes(o, 8, &[("volume", quote(v)), ("destination", quote(CACHE_DIR))]);
        o.push_str("      }\n\n");
    }
    o.push_str("      # Downloaded into the task's local/ directory; the checksum is\n");
    o.push_str("      # verified before the task starts.\n");
    o.push_str("      artifact {\n");
    let destination = format!("local/{}", build.file_name);
    attributes(
        o,
        8,
        &[
            ("source", quote(&build.source)),
            ("destination", quote(&destination)),
            ("mode", quote("file")),
        ],
    );
    o.push_str("\n        options {\n");
    let mut options = vec![("checksum", quote(&build.checksum))];
    options.extend(build.options.iter().map(|(k, v)| (k.as_str(), quote(v))));
    attributes(o, 10, &options);
    o.push_str("        }\n      }\n\n");
    o.push_str("      config {\n");
    let mut config = Vec::new();
    if let Some(tote) = &job.tote_run {
        // The client's own tote checks the bundle against the client's
        // policy (/etc/tote/trusted-keys), then runs those very bytes.
        let args: Vec<String> = ["run".to_owned(), destination.clone()]
            .into_iter()
            .chain(job.args.iter().cloned())
            .collect();
        config.push(("command", quote(tote)));
        config.push(("args", list(&args)));
    } else {
        config.push(("command", quote(&destination)));
        if !job.args.is_empty() {
            config.push(("args", list(&job.args)));
        }
    }
    attributes(o, 8, &config);
    o.push_str("      }\n\n");
    if let Some(r) = build.remote.as_ref().filter(|r| r.url.starts_with("s3://")) {
        let path = variables_path(job);
        o.push_str(&format!(
            "      # A thin bundle: at launch it fetches the blocks its cache lacks from\n      # {}. The S3 key reaches the task from Nomad variables, never the\n      # job: nomad var put {path} AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...\n",
            r.url
        ));
        o.push_str("      template {\n");
        o.push_str("        data        = <<-EOT\n");
        o.push_str(&format!("          {{{{ with nomadVar \"{path}\" }}}}\n"));
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            o.push_str(&format!("          {k}={{{{ .{k} }}}}\n"));
        }
        o.push_str("          {{ end }}\n        EOT\n");
        attributes(
            o,
            8,
            &[("destination", quote("secrets/tote-s3.env")), ("env", "true".into())],
        );
        o.push_str("      }\n\n");
    }
    if !job.env.is_empty() {
        o.push_str("      env {\n");
        let env: Vec<(&str, String)> = job.env.iter().map(|(k, v)| (k.as_str(), quote(v))).collect();
        attributes(o, 8, &env);
        o.push_str("      }\n\n");
    }
    o.push_str("      # The bundle is PID 1 of the task: it passes kill_signal on to the\n");
    o.push_str("      # program and exits with its status. A program still running after\n");
    o.push_str("      # kill_timeout is killed with SIGKILL, with everything it started.\n");
    attributes(
        o,
        6,
        &[
            ("kill_signal", quote(KILL_SIGNAL)),
            ("kill_timeout", quote(KILL_TIMEOUT)),
        ],
    );
    o.push_str("\n      resources {\n");
    attributes(
        o,
        8,
        &[("cpu", job.cpu.to_string()), ("memory", job.memory.to_string())],
    );
    o.push_str("      }\n    }\n  }\n");
}

/// Where the job's Nomad variables are: `nomad/jobs/<job>`, which every
/// task of the job may read without a policy.
pub fn variables_path(job: &Job) -> String {
    format!("nomad/jobs/{}", job.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_templates_literal() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("${HOME} %{if} $x 100%"), r#""$${HOME} %%{if} $x 100%""#);
        assert_eq!(quote("l1\nl2\t\u{1}"), r#""l1\nl2\t\u0001""#);
    }
}
