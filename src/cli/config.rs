//! `--config FILE`: the flags of `replay` and `live` from a TOML file (contrib/otwatch.toml is
//! the commented example). A flag on the command line overrides the file.
//!
//! The file's keys stand for flags, grouped in sections ([`KEYS`]). Before the command line is
//! parsed, the file becomes the flags it stands for, placed ahead of the user's own; a flag the
//! user gives (or one that conflicts with it, such as `--baseline` against the file's `learn`)
//! drops the file's. A key of the other command (`capture.speed` for `live`) is left out, so
//! one file serves both. An unknown section or key, a value of the wrong kind, or a value its
//! flag refuses (`workers = 0`) is an error that names the file and the key.

use std::ffi::OsString;
use std::path::Path;

use clap::{CommandFactory, Parser};

/// (section, key, flag): every key the file takes, and the flag it stands for.
pub(crate) const KEYS: &[(&str, &str, &str)] = &[
    ("capture", "interface", "interface"),
    ("capture", "workers", "workers"),
    ("capture", "speed", "speed"),
    ("capture", "user", "user"),
    ("capture", "ring_blocks", "ring-blocks"),
    ("capture", "block_size", "block-size"),
    ("capture", "no_promiscuous", "no-promiscuous"),
    ("capture", "libpcap", "libpcap"),
    ("capture", "bpf", "bpf"),
    ("capture", "quiet", "quiet"),
    ("outputs", "events", "events"),
    ("outputs", "alerts", "alerts"),
    ("outputs", "evidence", "evidence"),
    ("outputs", "log_format", "log-format"),
    ("outputs", "openmetrics", "openmetrics"),
    ("detection", "learn", "learn"),
    ("detection", "baseline", "baseline"),
    ("detection", "save_baseline", "save-baseline"),
    ("detection", "sensor_name", "sensor-name"),
    ("metrics", "listen", "metrics"),
    ("metrics", "max_channels", "metrics-max-channels"),
    ("metrics", "web_config", "web-config"),
    ("metrics", "hold", "metrics-hold"),
    ("syslog", "url", "syslog"),
    ("syslog", "ca", "syslog-ca"),
    ("syslog", "format", "syslog-format"),
    ("syslog", "events", "syslog-events"),
    ("syslog", "max_size", "syslog-max-size"),
    ("remote_write", "url", "remote-write"),
    ("remote_write", "ca", "remote-write-ca"),
    ("remote_write", "interval", "remote-write-interval"),
];

/// The command line with the flags of `--config FILE` put in, for `replay` and `live`; other
/// command lines as they are.
pub(crate) fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(sub) = args.get(1).and_then(|a| a.to_str()).map(str::to_string) else {
        return Ok(args);
    };
    if sub != "replay" && sub != "live" {
        return Ok(args);
    }
    let Some(path) = config_path(&args[2..]) else {
        return Ok(args);
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let flags = flags_of(&text, &sub).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let cmd = super::Cli::command();
    let Some(cmd) = cmd.find_subcommand(&sub) else {
        return Ok(args);
    };
    let given = given_flags(cmd, &args[2..]);
    let mut out: Vec<OsString> = args[..2].to_vec();
    let mut from_file = Vec::new();
    for (flag, value) in flags {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(flag)) else {
            continue;
        };
        // Conflicts are declared on one of the two flags: look both ways.
        let overridden = given.iter().any(|g| {
            *g == flag
                || cmd
                    .get_arg_conflicts_with(arg)
                    .iter()
                    .any(|c| c.get_long() == Some(g.as_str()))
                || cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(g.as_str()))
                    .is_some_and(|ga| {
                        cmd.get_arg_conflicts_with(ga)
                            .iter()
                            .any(|c| c.get_long() == Some(flag))
                    })
        });
        if overridden {
            continue;
        }
        from_file.push(flag);
        // `--flag=value` in one argument: a value that starts with `-` stays a value.
        out.push(match value {
            Some(v) => format!("--{flag}={v}").into(),
            None => format!("--{flag}").into(),
        });
    }
    out.extend_from_slice(&args[2..]);
    // A value the file gave that its flag refuses (`workers = 0`): the error names the file and
    // the key, not a flag the user never typed. Other errors are the command line's own.
    if let Err(e) = super::Cli::try_parse_from(&out) {
        use clap::error::{ContextKind, ContextValue};
        if let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) {
            let long = bad
                .trim_start_matches("--")
                .split([' ', '='])
                .next()
                .unwrap_or("");
            if let Some(&(section, key, _)) = KEYS
                .iter()
                .find(|k| k.2 == long && from_file.contains(&k.2))
            {
                let why = e.to_string();
                let why = why
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                return Err(format!(
                    "--config {}: [{section}] {key}: {why}",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

/// `--config FILE` or `--config=FILE` among the arguments.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(|p| Path::new(p).to_path_buf());
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(Path::new(p).to_path_buf());
        }
        if s == "--" {
            return None;
        }
    }
    None
}

/// The long names of the flags the command line gives (`--alerts`, `--alerts=…`, `-i`).
fn given_flags(cmd: &clap::Command, args: &[OsString]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            out.push(long.split('=').next().unwrap_or(long).to_string());
        } else if let Some(short) = s.strip_prefix('-').and_then(|r| r.chars().next()) {
            if let Some(long) = cmd
                .get_arguments()
                .find(|a| a.get_short() == Some(short))
                .and_then(|a| a.get_long())
            {
                out.push(long.to_string());
            }
        }
    }
    out
}

/// The flags (and their values) a configuration file stands for, for the subcommand `sub`:
/// keys of the other subcommand are left out.
fn flags_of(text: &str, sub: &str) -> Result<Vec<(&'static str, Option<String>)>, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let cmd = super::Cli::command();
    let known = |flag: &str| {
        cmd.find_subcommand(sub)
            .is_some_and(|c| c.get_arguments().any(|a| a.get_long() == Some(flag)))
    };
    let mut out = Vec::new();
    for (section, body) in &doc {
        if !KEYS.iter().any(|(s, _, _)| s == section) {
            let sections: Vec<&str> = KEYS.iter().map(|k| k.0).fold(Vec::new(), |mut v, s| {
                if !v.contains(&s) {
                    v.push(s);
                }
                v
            });
            return Err(format!(
                "unknown section or key `{section}` (the sections are {})",
                sections.join(", ")
            ));
        }
        let toml::Value::Table(body) = body else {
            return Err(format!("`{section}` must be a section ([{section}])"));
        };
        for (key, value) in body {
            let value_kind = value;
            let name = format!("{section}.{key}");
            let Some(&(_, _, flag)) = KEYS.iter().find(|(s, k, _)| s == section && k == key) else {
                return Err(format!("unknown key `{name}`"));
            };
            let value = match value {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Float(f) => Some(f.to_string()),
                toml::Value::Boolean(_) => None,
                _ => {
                    return Err(format!(
                        "`{name}`: expected a string, a number or a boolean"
                    ))
                }
            };
            let is_switch = cmd
                .find_subcommand(if known(flag) { sub } else { other(sub) })
                .and_then(|c| c.get_arguments().find(|a| a.get_long() == Some(flag)))
                .is_some_and(is_switch);
            // A switch that is off is the default: nothing to pass.
            let off = matches!(value_kind, toml::Value::Boolean(false));
            if is_switch != value.is_none() {
                return Err(format!(
                    "`{name}`: expected {}",
                    if is_switch {
                        "true or false"
                    } else {
                        "a value"
                    }
                ));
            }
            if known(flag) && !off {
                out.push((flag, value));
            }
        }
    }
    Ok(out)
}

/// A switch: `--quiet` alone, or `--quiet=true|false` (a file's `quiet = true` is undone on the
/// command line by `--quiet=false`).
pub(crate) fn is_switch(a: &clap::Arg) -> bool {
    !a.get_action().takes_values() || a.get_num_args().is_some_and(|n| n.min_values() == 0)
}

fn other(sub: &str) -> &'static str {
    if sub == "live" {
        "replay"
    } else {
        "live"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// The file holds everything the flags of `replay` and `live` do (but `--config` itself).
    #[test]
    fn every_flag_has_a_key() {
        let cmd = super::super::Cli::command();
        for sub in ["replay", "live"] {
            for a in cmd.find_subcommand(sub).unwrap().get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if ["config", "help"].contains(&long) {
                    continue;
                }
                assert!(
                    KEYS.iter().any(|k| k.2 == long),
                    "--{long} of {sub} has no key in the configuration file"
                );
            }
        }
        for (_, _, flag) in KEYS {
            assert!(
                ["replay", "live"].iter().any(|s| cmd
                    .find_subcommand(s)
                    .unwrap()
                    .get_arguments()
                    .any(|a| a.get_long() == Some(flag))),
                "key for a flag that does not exist: --{flag}"
            );
        }
    }

    #[test]
    fn keys_become_flags_and_unknown_ones_are_named() {
        let f = flags_of(
            "[detection]\nlearn = \"10m\"\n[capture]\nworkers = 2\nspeed = \"max\"\nno_promiscuous = true\nlibpcap = false\n",
            "live",
        )
        .unwrap();
        let mut f = f;
        f.sort();
        assert_eq!(
            f,
            [
                ("learn", Some("10m".to_string())),
                ("no-promiscuous", None),
                ("workers", Some("2".to_string())),
            ]
        );
        let e = flags_of("[detection]\nlern = \"10m\"\n", "live").unwrap_err();
        assert!(e.contains("`detection.lern`"), "{e}");
        let e = flags_of("[detect]\nlearn = \"10m\"\n", "live").unwrap_err();
        assert!(e.contains("`detect`"), "{e}");
        let e = flags_of("learn = \"10m\"\n", "live").unwrap_err();
        assert!(e.contains("`learn`"), "{e}");
        let e = flags_of("[capture]\nquiet = \"yes\"\n", "live").unwrap_err();
        assert!(e.contains("`capture.quiet`: expected true or false"), "{e}");
        let e = flags_of("[outputs]\nalerts = true\n", "live").unwrap_err();
        assert!(e.contains("`outputs.alerts`: expected a value"), "{e}");
        let e = flags_of("[outputs]\nalerts = false\n", "live").unwrap_err();
        assert!(e.contains("`outputs.alerts`: expected a value"), "{e}");
        assert!(flags_of("[outputs\n", "live").is_err());
    }

    /// The shipped example is a valid configuration of `live` and of `replay`.
    #[test]
    fn the_contrib_example_parses() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/otwatch.toml");
        for sub in ["live", "replay"] {
            let mut args = os(&["otwatch", sub, "--config", example]);
            if sub == "replay" {
                args.push("x.pcap".into());
            }
            let args = expand(args).unwrap();
            assert!(args.len() > 6, "{args:?}");
            super::super::Cli::try_parse_from(&args).unwrap();
        }
    }
}
