//! TOML configuration files for `wirefold replay|capture|core --config FILE`.
//!
//! A file's sections are the option groups of `--help` (`[capture]`,
//! `[dpdk]`, `[flow]`, `[export]`, `[telemetry]`, `[core]`) and its keys are
//! the long option names with `_` for `-`, so the file and the flags can never
//! drift apart: every value goes through the same parser as its flag, and
//! flags given on the command line override the file. An error names the
//! file, the field, the value and what is allowed.
use crate::cli::{CheckConfigArgs, ConfigKind};
use clap::builder::ArgAction;
use clap::{Arg, Command};
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// Why a configuration file was refused (the message says where and why).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The section an option belongs to: its `--help` heading, lower-cased.
pub fn section_of(arg: &Arg) -> Option<String> {
    arg.get_help_heading().map(|h| h.to_ascii_lowercase())
}

fn configurable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some() && a.get_id() != "config" && !a.is_hide_set() && section_of(a).is_some())
}

/// Configurable options of several subcommands (one sensor file serves both
/// `replay` and `capture`), first seen first.
fn union<'a>(cmds: &[&'a Command]) -> Vec<&'a Arg> {
    let mut v: Vec<&Arg> = Vec::new();
    for c in cmds {
        for a in configurable(c) {
            if !v.iter().any(|b| b.get_id() == a.get_id()) {
                v.push(a);
            }
        }
    }
    v
}

/// What `--help` says an option takes, for error messages.
fn allowed(arg: &Arg) -> String {
    let pv: Vec<String> = arg.get_possible_values().iter().map(|p| p.get_name().to_string()).collect();
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let default: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    let mut s = if !pv.is_empty() {
        format!("one of {}", pv.join(", "))
    } else if matches!(arg.get_action(), ArgAction::SetTrue) {
        "true or false".to_string()
    } else {
        arg.get_value_names().map(|v| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")).unwrap_or_default()
    };
    if !help.is_empty() {
        s.push_str(" (");
        s.push_str(help.trim_end_matches('.'));
        if !default.is_empty() {
            s.push_str(&format!("; default {}", default.join(",")));
        }
        s.push(')');
    }
    s
}

fn render_value(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a.iter().map(render_value).collect::<Option<Vec<_>>>()?.join(","),
        _ => return None,
    })
}

/// Read `path`, check it against the options of `cmds`, and turn it into
/// command-line arguments (`--name=value`) for `target`, one of them.
pub fn load(cmds: &[&Command], target: &Command, path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read config {file}: {e}")))?;
    from_str(cmds, target, &file, &text)
}

/// [`load`] on text already read; `file` names it in errors.
pub fn from_str(cmds: &[&Command], target: &Command, file: &str, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError(format!("config {file} is not valid TOML: {e}")))?;
    let all = union(cmds);
    let mut sections: Vec<String> = all.iter().filter_map(|a| section_of(a)).collect();
    sections.sort();
    sections.dedup();
    let mut out = Vec::new();
    let core = cmds.iter().any(|c| c.get_name() == "core");
    for (section, body) in &table {
        // A core's `[gates]` table is the promotion gates' own configuration,
        // checked by `wirefold_core::gates::GatesConfig`.
        if core && section == "gates" {
            continue;
        }
        let Some(body) = body.as_table() else {
            return Err(ConfigError(format!(
                "config {file}: `{section}` must be a section such as [{}]; sections allowed: {}",
                sections.first().map(String::as_str).unwrap_or("flow"),
                sections.join(", ")
            )));
        };
        if !sections.contains(section) {
            return Err(ConfigError(format!(
                "config {file}: unknown section [{section}]; sections allowed: {}",
                sections.join(", ")
            )));
        }
        for (key, value) in body {
            let field = format!("{section}.{key}");
            let found = all.iter().find(|a| a.get_id() == key.as_str());
            let arg = match found {
                Some(a) if section_of(a).as_deref() == Some(section) => *a,
                Some(a) => {
                    return Err(ConfigError(format!(
                        "config {file}: field `{key}` belongs in [{}], not [{section}]",
                        section_of(a).unwrap_or_default()
                    )))
                }
                None => {
                    let names: Vec<String> = all
                        .iter()
                        .filter(|a| section_of(a).as_deref() == Some(section))
                        .map(|a| a.get_id().to_string())
                        .collect();
                    return Err(ConfigError(format!(
                        "config {file}: unknown field `{field}`; fields allowed in [{section}]: {}",
                        names.join(", ")
                    )));
                }
            };
            let long = arg.get_long().expect("configurable args have a long name");
            let shown = value.to_string();
            // Options of a sibling subcommand are checked but not passed on.
            let applies = configurable(target).any(|a| a.get_id() == arg.get_id());
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                match value.as_bool() {
                    Some(true) if applies => out.push(OsString::from(format!("--{long}"))),
                    Some(true) => {}
                    Some(false) => {}
                    None => {
                        return Err(ConfigError(format!(
                            "config {file}: {field} = {shown} is invalid; allowed: {}",
                            allowed(arg)
                        )))
                    }
                }
                continue;
            }
            let Some(s) = render_value(value) else {
                return Err(ConfigError(format!(
                    "config {file}: {field} = {shown} is invalid: not a string, number or list; allowed: {}",
                    allowed(arg)
                )));
            };
            // The flag's own parser, on a one-option command.
            let probe = Command::new("wirefold")
                .no_binary_name(true)
                .arg(Arg::new("v").long("v").action(ArgAction::Set).value_parser(arg.get_value_parser().clone()));
            if let Err(e) = probe.try_get_matches_from([format!("--v={s}")]) {
                let why = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                return Err(ConfigError(format!(
                    "config {file}: {field} = {shown} is invalid{why}; allowed: {}",
                    allowed(arg)
                )));
            }
            if applies {
                out.push(OsString::from(format!("--{long}={s}")));
            }
        }
    }
    Ok(out)
}

/// Insert the arguments from `--config FILE` (if given) into `argv`, right
/// after the subcommand, so flags on the command line override the file.
/// Returns `argv` unchanged when there is no `--config`.
pub fn expand_argv(root: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let Some(sub_at) = argv.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1) else {
        return Ok(argv);
    };
    let sub_name = argv[sub_at].to_string_lossy().into_owned();
    let Some(sub) = root.find_subcommand(&sub_name) else { return Ok(argv) };
    if sub.get_arguments().all(|a| a.get_id() != "config") {
        return Ok(argv);
    }
    let mut path = None;
    let mut i = sub_at + 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            path = argv.get(i + 1).cloned();
            i += 1;
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(OsString::from(p));
        }
        i += 1;
    }
    let Some(path) = path else { return Ok(argv) };
    let extra = load(&siblings(root, sub), sub, Path::new(&path))?;
    let mut out = argv[..=sub_at].to_vec();
    out.extend(extra);
    out.extend(argv[sub_at + 1..].iter().cloned());
    Ok(out)
}

/// The subcommands one configuration file serves together with `sub`:
/// `replay` and `capture` share a sensor file.
pub fn siblings<'a>(root: &'a Command, sub: &'a Command) -> Vec<&'a Command> {
    const SENSOR: [&str; 2] = ["capture", "replay"];
    if SENSOR.contains(&sub.get_name()) {
        SENSOR.iter().filter_map(|n| root.find_subcommand(n)).collect()
    } else {
        vec![sub]
    }
}

/// The settings a subcommand would run with from `file_args` (from
/// [`load`]): one TOML document with every configurable option, its value
/// from the file or its default, and a comment saying which.
pub fn effective(cmds: &[&Command], file_args: &[OsString]) -> String {
    let all = union(cmds);
    let given: Vec<(String, String)> = file_args
        .iter()
        .filter_map(|a| {
            let a = a.to_string_lossy();
            let a = a.strip_prefix("--")?;
            Some(match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (a.to_string(), "true".to_string()),
            })
        })
        .collect();
    let sections: Vec<String> = all.iter().filter_map(|a| section_of(a)).collect();
    let mut seen = Vec::new();
    let mut s = String::new();
    for sec in sections {
        if seen.contains(&sec) {
            continue;
        }
        seen.push(sec.clone());
        s.push_str(&format!("[{sec}]\n"));
        for a in all.iter().filter(|a| section_of(a).as_deref() == Some(sec.as_str())) {
            let long = a.get_long().unwrap_or_default();
            let from_file = given.iter().find(|(k, _)| k == long).map(|(_, v)| v.clone());
            let is_flag = matches!(a.get_action(), ArgAction::SetTrue);
            let (value, origin) = match from_file {
                Some(v) => (Some(v), "from the file"),
                None if is_flag => (Some("false".to_string()), "default"),
                None => {
                    let d: Vec<String> =
                        a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
                    ((!d.is_empty()).then(|| d.join(",")), "default")
                }
            };
            let key = a.get_id().as_str();
            match value {
                Some(v) => {
                    let lit = if is_flag || v.parse::<i64>().is_ok() || (v.parse::<f64>().is_ok() && v.contains('.')) {
                        v
                    } else {
                        toml::Value::String(v).to_string()
                    };
                    s.push_str(&format!("{key} = {lit}  # {origin}\n"));
                }
                None => s.push_str(&format!("# {key} is not set\n")),
            }
        }
        s.push('\n');
    }
    s
}

/// `MemAvailable` of /proc/meminfo, in bytes (None where it cannot be read).
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What `tables` flow tables of `max_flows` flows take when full (each table
/// allocates its storage at start; pages are touched as flows arrive): the
/// line printed at start-up and by `check-config`, or, when that is more than
/// `available` bytes, the error (exit 2) that says so.
pub fn flow_memory(max_flows: usize, tables: usize, available: Option<u64>) -> Result<String, String> {
    let tables = tables.max(1);
    let per_table = crate::flow::FlowTable::memory_bytes(max_flows.max(1)) as u64;
    let total = per_table * tables as u64;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let per_flow = crate::flow::FlowTable::bytes_per_flow(max_flows);
    let what = if tables > 1 {
        format!(
            "flow tables: {:.0} MiB, {tables} tables of max_flows = {max_flows} ({per_flow:.0} bytes per flow)",
            mib(total)
        )
    } else {
        format!("flow table: {:.0} MiB for max_flows = {max_flows} ({per_flow:.0} bytes per flow)", mib(total))
    };
    match available {
        Some(a) if total > a => Err(format!(
            "{what}: more than the {:.0} MiB of memory available (MemAvailable); lower --max-flows (flow.max_flows) to at most about {:.0}",
            mib(a),
            (a / tables as u64) as f64 / crate::flow::FlowTable::bytes_per_flow(max_flows)
        )),
        _ => Ok(what),
    }
}

/// `wirefold check-config FILE`: check a sensor or core configuration file
/// against the subcommands of `root` (the binary's command line) and print
/// the effective settings; exit 2 with the field, value and what is allowed
/// when it is invalid.
pub fn check_file(a: &CheckConfigArgs, root: &Command) -> ExitCode {
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirefold: cannot read config {}: {e}", a.file.display());
            return ExitCode::from(2);
        }
    };
    let kind = a.kind.unwrap_or_else(|| {
        let core = text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("core"));
        if core {
            ConfigKind::Core
        } else {
            ConfigKind::Sensor
        }
    });
    let names: &[&str] = match kind {
        ConfigKind::Sensor => &["capture", "replay"],
        ConfigKind::Core => &["core"],
    };
    let cmds: Vec<&Command> = names.iter().filter_map(|n| root.find_subcommand(n)).collect();
    let file = a.file.display().to_string();
    let mut args = Vec::new();
    for target in &cmds {
        match from_str(&cmds, target, &file, &text) {
            Ok(v) => args.extend(v),
            Err(e) => {
                eprintln!("wirefold: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if kind == ConfigKind::Core {
        for arg in cmds[0].get_arguments().filter(|a| a.is_required_set()) {
            let long = arg.get_long().unwrap_or_default();
            if !args.iter().any(|x| x.to_string_lossy().starts_with(&format!("--{long}="))) {
                eprintln!(
                    "wirefold: config {file}: core.{} is required (or give --{long} when starting the core)",
                    arg.get_id()
                );
                return ExitCode::from(2);
            }
        }
    }
    print!("{}", effective(&cmds, &args));
    if kind == ConfigKind::Sensor {
        let value = |name: &str, default: usize| {
            args.iter()
                .rev()
                .find_map(|x| x.to_str()?.strip_prefix(&format!("--{name}="))?.parse().ok())
                .unwrap_or(default)
        };
        let dpdk = args.iter().any(|x| x == "--dpdk" || x == "--dpdk=true");
        let tables = if dpdk { value("queues", 1) } else { value("threads", 1) };
        match flow_memory(value("max-flows", 1_000_000), tables, mem_available()) {
            Ok(line) => println!("\n# {line}"),
            Err(e) => {
                eprintln!("wirefold: config {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if kind == ConfigKind::Core {
        match wirefold_core::gates::GatesConfig::from_toml_document(&text) {
            Ok(g) => print!("\n{}", g.describe()),
            Err(e) => {
                eprintln!("wirefold: config {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    eprintln!(
        "wirefold: config {file} is a valid {} configuration",
        if kind == ConfigKind::Core { "core" } else { "sensor" }
    );
    ExitCode::SUCCESS
}
