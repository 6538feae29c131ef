//! The parts of a Nomad job specification that the exec driver uses, read
//! with a real HCL parser (hcl-rs).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use hcl::{Block, Body, Expression};

#[derive(Debug)]
pub struct Task {
    pub job: String,
    pub group: String,
    pub name: String,
    pub artifacts: Vec<Artifact>,
    pub command: String,
    pub args: Vec<String>,
    /// `config { no_pivot_root = true }`: the task runs in a chroot.
    pub no_pivot_root: bool,
    pub env: Vec<(String, String)>,
    pub kill_signal: String,
    pub kill_timeout: Duration,
    /// Group network ports: label and static port (None: Nomad picks one).
    pub ports: Vec<(String, Option<u16>)>,
    pub cpu: u64,
    pub memory: u64,
    /// The task's `volume_mount`s of the group's host volumes.
    pub volumes: Vec<VolumeMount>,
    /// `template` blocks: what they render, where, and whether it is env.
    pub templates: Vec<Template>,
}

/// A task's `template` block (inline `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub data: String,
    pub destination: String,
    pub env: bool,
}

/// Render a template's data the way Nomad's consul-template would, for the
/// one form the stand-in knows: `{{ with nomadVar "PATH" }}` … `{{ .KEY }}`
/// … `{{ end }}`, reading `vars` (PATH, KEY, value). Anything else is
/// refused rather than misrendered.
pub fn render(data: &str, vars: &[(String, String, String)]) -> Result<String> {
    let mut out = String::new();
    let mut path: Option<String> = None;
    let mut rest = data;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("}}").context("template: an unclosed {{")? + i;
        let action = rest[i + 2..j]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        rest = &rest[j + 2..];
        if let Some(p) = action.strip_prefix("with nomadVar ") {
            path = Some(p.trim().trim_matches('"').to_owned());
        } else if action == "end" {
            path = None;
        } else if let Some(key) = action.strip_prefix('.') {
            let p = path
                .as_deref()
                .context("template: {{ .KEY }} outside {{ with nomadVar }}")?;
            let v = vars
                .iter()
                .find(|(vp, k, _)| vp == p && k == key)
                .with_context(|| format!("template: no Nomad variable {p} with key {key} (--var)"))?;
            out.push_str(&v.2);
        } else {
            bail!("template: {{{{ {action} }}}} is not something this stand-in renders");
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A group `volume` of type "host", mounted by the task's `volume_mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The client's `host_volume` name (the group volume's `source`).
    pub source: String,
    /// Where it appears in the task.
    pub destination: String,
    pub read_only: bool,
}

#[derive(Debug)]
pub struct Artifact {
    pub source: String,
    pub destination: String,
    pub mode: String,
    pub options: Vec<(String, String)>,
}

fn label(b: &Block) -> Result<String> {
    match b.labels() {
        [l] => Ok(l.as_str().to_owned()),
        _ => bail!("{} block: expected one label", b.identifier()),
    }
}

fn blocks<'a>(body: &'a Body, name: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == name)
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn string(e: &Expression, what: &str) -> Result<String> {
    match e {
        Expression::String(s) => Ok(s.clone()),
        // A heredoc without interpolation (a `template`'s data): its text,
        // `<<-` ones with their common indentation removed.
        Expression::TemplateExpr(t) => match t.as_ref() {
            hcl::expr::TemplateExpr::Heredoc(h) if !h.template.contains("${") && !h.template.contains("%{") => {
                Ok(match h.strip {
                    hcl::expr::HeredocStripMode::Indent => dedent(&h.template),
                    hcl::expr::HeredocStripMode::None => h.template.clone(),
                })
            }
            _ => bail!("{what}: interpolation (${{...}}) is not simulated"),
        },
        other => bail!("{what}: expected a string, found {other}"),
    }
}

/// Remove the indentation every non-empty line shares.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}

fn opt_string(body: &Body, key: &str) -> Result<Option<String>> {
    attr(body, key).map(|e| string(e, key)).transpose()
}

fn number(e: &Expression, what: &str) -> Result<u64> {
    match e {
        Expression::Number(n) => n.as_u64().with_context(|| format!("{what}: expected a whole number")),
        other => bail!("{what}: expected a number, found {other}"),
    }
}

fn boolean(body: &Body, key: &str) -> Result<bool> {
    match attr(body, key) {
        None => Ok(false),
        Some(Expression::Bool(b)) => Ok(*b),
        Some(other) => bail!("{key}: expected true or false, found {other}"),
    }
}

/// The task's `volume_mount` blocks, resolved through the group's `volume`
/// blocks (host volumes only, as Nomad's exec driver mounts them).
fn volumes(group: &Body, task: &Body) -> Result<Vec<VolumeMount>> {
    let mut out = Vec::new();
    for m in blocks(task, "volume_mount") {
        let b = m.body();
        let name = opt_string(b, "volume")?.context("volume_mount: no volume")?;
        let destination = opt_string(b, "destination")?.context("volume_mount: no destination")?;
        let v = blocks(group, "volume")
            .find(|v| label(v).is_ok_and(|l| l == name))
            .with_context(|| format!("volume_mount: no group volume {name:?}"))?;
        let kind = opt_string(v.body(), "type")?.unwrap_or_default();
        if kind != "host" {
            bail!("volume {name:?}: type {kind:?}; only \"host\" is simulated");
        }
        out.push(VolumeMount {
            source: opt_string(v.body(), "source")?.with_context(|| format!("volume {name:?}: no source"))?,
            destination,
            read_only: boolean(v.body(), "read_only")? || boolean(b, "read_only")?,
        });
    }
    Ok(out)
}

fn strings_of(body: &Body) -> Result<Vec<(String, String)>> {
    body.attributes()
        .map(|a| Ok((a.key().to_owned(), string(a.expr(), a.key())?)))
        .collect()
}

/// `5s`, `500ms`, `1m`, `1m30s`: Go's time.ParseDuration for these units.
pub fn duration(s: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().with_context(|| format!("duration {s:?}"))?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            u => bail!("duration {s:?}: unknown unit {u:?}"),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

/// The `${attr.cpu.arch}` a group's constraint requires, if any (one
/// constraint, on that attribute, is all that is simulated).
fn required_arch(group: &Body) -> Result<Option<String>> {
    if let Some(c) = blocks(group, "constraint").next() {
        let attribute = match attr(c.body(), "attribute") {
            Some(Expression::TemplateExpr(t)) => t.to_string(),
            Some(e) => string(e, "constraint.attribute")?,
            None => bail!("constraint: no attribute"),
        };
        let operator = opt_string(c.body(), "operator")?.unwrap_or_else(|| "=".to_owned());
        if !attribute.contains("${attr.cpu.arch}") || operator != "=" {
            bail!("constraint on {attribute} {operator}: only \"${{attr.cpu.arch}}\" = is simulated");
        }
        return opt_string(c.body(), "value").map(Some).map(Option::flatten);
    }
    Ok(None)
}

/// The task named `want` (or the first task) of the job in `text`, in the
/// first group a client whose `${attr.cpu.arch}` is `cpu_arch` may run.
pub fn parse(text: &str, want: Option<&str>, cpu_arch: &str) -> Result<Task> {
    let body = hcl::parse(text).context("parsing the job file")?;
    let job = blocks(&body, "job").next().context("no job block")?;
    for group in blocks(job.body(), "group") {
        if required_arch(group.body())?.is_some_and(|a| a != cpu_arch) {
            continue;
        }
        for task in blocks(group.body(), "task") {
            let name = label(task)?;
            if want.is_some_and(|w| w != name) {
                continue;
            }
            return read_task(label(job)?, label(group)?, name, group.body(), task.body());
        }
    }
    bail!("no task {} in the job", want.unwrap_or("at all"))
}

fn read_task(job: String, group: String, name: String, group_body: &Body, t: &Body) -> Result<Task> {
    let driver = opt_string(t, "driver")?.context("task: no driver")?;
    if driver != "exec" {
        bail!("task {name}: driver {driver:?}; this stands in for \"exec\" only");
    }
    let mut artifacts = Vec::new();
    for a in blocks(t, "artifact") {
        let b = a.body();
        artifacts.push(Artifact {
            source: opt_string(b, "source")?.context("artifact: no source")?,
            destination: opt_string(b, "destination")?.unwrap_or_else(|| "local/".to_owned()),
            mode: opt_string(b, "mode")?.unwrap_or_else(|| "any".to_owned()),
            options: match blocks(b, "options").next() {
                Some(o) => strings_of(o.body())?,
                None => Vec::new(),
            },
        });
    }
    let config = blocks(t, "config").next().context("task: no config block")?.body();
    let command = opt_string(config, "command")?.context("config: no command")?;
    let args = match attr(config, "args") {
        Some(Expression::Array(items)) => items.iter().map(|e| string(e, "args")).collect::<Result<_>>()?,
        Some(other) => bail!("config.args: expected a list, found {other}"),
        None => Vec::new(),
    };
    let no_pivot_root = match attr(config, "no_pivot_root") {
        None => false,
        Some(Expression::Bool(b)) => *b,
        Some(other) => bail!("config.no_pivot_root: expected true or false, found {other}"),
    };
    let env = match blocks(t, "env").next() {
        Some(e) => strings_of(e.body())?,
        None => Vec::new(),
    };
    let mut ports = Vec::new();
    for net in blocks(group_body, "network") {
        for p in blocks(net.body(), "port") {
            let port = attr(p.body(), "static").map(|e| number(e, "static")).transpose()?;
            let port = port
                .map(|n| u16::try_from(n).ok().filter(|&n| n > 0).context("static: not a port"))
                .transpose()?;
            ports.push((label(p)?, port));
        }
    }
    let resources = blocks(t, "resources").next().map(|r| r.body());
    let resource = |key: &str, default: u64| -> Result<u64> {
        match resources.and_then(|r| attr(r, key)) {
            Some(e) => number(e, key),
            None => Ok(default),
        }
    };
    Ok(Task {
        job,
        group,
        name,
        artifacts,
        command,
        args,
        no_pivot_root,
        env,
        kill_signal: opt_string(t, "kill_signal")?.unwrap_or_else(|| "SIGINT".to_owned()),
        kill_timeout: duration(&opt_string(t, "kill_timeout")?.unwrap_or_else(|| "5s".to_owned()))?,
        ports,
        cpu: resource("cpu", 100)?,
        memory: resource("memory", 300)?,
        volumes: volumes(group_body, t)?,
        templates: blocks(t, "template")
            .map(|b| {
                let b = b.body();
                Ok(Template {
                    data: opt_string(b, "data")?.context("template: no data")?,
                    destination: opt_string(b, "destination")?.context("template: no destination")?,
                    env: boolean(b, "env")?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("5").is_err());
        assert!(duration("s").is_err());
    }

    #[test]
    fn reads_a_task() {
        let t = parse(
            r#"job "j" {
  group "g" {
    network {
      port "http" { static = 8080 }
      port "dyn" {}
    }
    task "other" {
      driver = "exec"
      config { command = "x" }
    }
    volume "cache" {
      type      = "host"
      source    = "tote-cache"
      read_only = false
    }
    task "t" {
      driver = "exec"
      volume_mount {
        volume      = "cache"
        destination = "/tote-cache"
      }
      artifact {
        source = "s3::http://h/b/k"
        destination = "local/app"
        mode = "file"
        options { checksum = "sha256:00" }
      }
      config {
        command = "local/app"
        args = ["a", "b c"]
      }
      env { A = "1" }
      kill_timeout = "2s"
      resources { memory = 64 }
    }
  }
}"#,
            Some("t"),
            "amd64",
        )
        .unwrap();
        assert_eq!((t.job.as_str(), t.group.as_str(), t.name.as_str()), ("j", "g", "t"));
        assert_eq!(t.args, ["a", "b c"]);
        assert_eq!(
            t.artifacts[0].options,
            [("checksum".to_owned(), "sha256:00".to_owned())]
        );
        assert_eq!(t.ports, [("http".to_owned(), Some(8080)), ("dyn".to_owned(), None)]);
        assert_eq!(
            (t.kill_signal.as_str(), t.kill_timeout),
            ("SIGINT", Duration::from_secs(2))
        );
        assert_eq!((t.cpu, t.memory), (100, 64));
        assert_eq!(
            t.volumes,
            [VolumeMount {
                source: "tote-cache".into(),
                destination: "/tote-cache".into(),
                read_only: false
            }]
        );
        let err = parse(
            "job \"j\" {\ngroup \"g\" {\ntask \"t\" {\ndriver = \"docker\"\n}\n}\n}\n",
            None,
            "amd64",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("\"exec\" only"), "{err:#}");
        let err = parse(
            "job \"j\" {\ngroup \"g\" {\ntask \"t\" {\ndriver = \"exec\"\nconfig {\ncommand = \"${NOMAD_TASK_DIR}/x\"\n}\n}\n}\n}\n",
            None,
            "amd64",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not simulated"), "{err:#}");
    }

    #[test]
    fn a_group_is_placed_only_on_the_architecture_it_asks_for() {
        let job = r#"job "j" {
  group "j-amd64" {
    constraint {
      attribute = "${attr.cpu.arch}"
      value     = "amd64"
    }
    task "j" {
      driver = "exec"
      config { command = "local/app-x86_64" }
    }
  }
  group "j-arm64" {
    constraint {
      attribute = "${attr.cpu.arch}"
      value     = "arm64"
    }
    task "j" {
      driver = "exec"
      config { command = "local/app-aarch64" }
    }
  }
}"#;
        let on = |arch: &str| parse(job, None, arch).map(|t| (t.group, t.command));
        assert_eq!(on("amd64").unwrap(), ("j-amd64".into(), "local/app-x86_64".into()));
        assert_eq!(on("arm64").unwrap(), ("j-arm64".into(), "local/app-aarch64".into()));
        assert!(on("riscv64").is_err());
    }

    #[test]
    fn templates_render_nomad_variables_and_refuse_the_rest() {
        let vars = vec![("nomad/jobs/app".to_owned(), "K".to_owned(), "v=1".to_owned())];
        let t = "{{ with nomadVar \"nomad/jobs/app\" }}\nK={{ .K }}\n{{ end }}\n";
        assert_eq!(render(t, &vars).unwrap(), "\nK=v=1\n\n");
        assert!(render("{{ .K }}", &vars).is_err());
        assert!(render("{{ with nomadVar \"other\" }}{{ .K }}{{ end }}", &vars).is_err());
        assert!(render("{{ env \"HOME\" }}", &vars).is_err());
        assert_eq!(dedent("  a\n    b\n"), "a\n  b\n");
    }
}
