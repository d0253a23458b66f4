//! `--config FILE` through the binary: the file's keys act as their flags, a flag on the command
//! line overrides the file (a conflicting one too), and an unknown key is an error naming it.

mod common;

use std::path::Path;
use std::process::Command;

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/modbus_write.pcap")
}

fn sensors(alerts: &Path) -> Vec<String> {
    std::fs::read_to_string(alerts)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["sensor"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[test]
fn the_file_gives_flags_and_the_command_line_overrides_it() {
    let dir = common::scratch("config");
    let alerts = dir.join("alerts.jsonl");
    let baseline = dir.join("baseline.json");
    let config = dir.join("otwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\nquiet = true\ninterface = \"eth9\"\n[outputs]\nalerts = \"{}\"\n[detection]\nlearn = \"60s\"\nsensor_name = \"from-file\"\nsave_baseline = \"{}\"\n",
            alerts.display(),
            baseline.display()
        ),
    )
    .unwrap();
    // From the file alone (its `interface` is live's: left out of a replay).
    let out = Command::new(OTWATCH)
        .args(["replay", "--config"])
        .arg(&config)
        .arg(scenario())
        .output()
        .expect("otwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "quiet = true");
    let from_file = sensors(&alerts);
    assert!(!from_file.is_empty());
    assert!(from_file.iter().all(|s| s == "from-file"), "{from_file:?}");
    assert!(baseline.exists(), "save_baseline from the file");
    // A flag overrides its key; --baseline overrides the file's conflicting `learn`.
    std::fs::remove_file(&alerts).unwrap();
    let out = Command::new(OTWATCH)
        .args(["replay", "--sensor-name", "from-flag", "--baseline"])
        .arg(&baseline)
        .arg(format!("--config={}", config.display()))
        .arg(scenario())
        .output()
        .expect("otwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_flag = sensors(&alerts);
    assert!(!from_flag.is_empty());
    assert!(from_flag.iter().all(|s| s == "from-flag"), "{from_flag:?}");
    assert!(out.stderr.is_empty(), "quiet = true, not overridden");
    // A switch the file turns on is turned off by `--switch=false`; `-q` before the capture
    // takes no value from it.
    for (flag, summary) in [
        ("--quiet=false", true),
        ("--quiet=true", false),
        ("-q", false),
    ] {
        let out = Command::new(OTWATCH)
            .args(["replay", flag, "--sensor-name", "s", "--baseline"])
            .arg(&baseline)
            .arg("--config")
            .arg(&config)
            .arg(scenario())
            .output()
            .expect("otwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flag}: {stderr}");
        assert_eq!(stderr.contains("packets"), summary, "{flag}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unknown_key_is_named() {
    let dir = common::scratch("config-bad");
    let config = dir.join("otwatch.toml");
    std::fs::write(&config, "[detection]\nlearn = \"60s\"\nlern = \"10m\"\n").unwrap();
    let out = Command::new(OTWATCH)
        .args(["replay", "--config"])
        .arg(&config)
        .arg(scenario())
        .output()
        .expect("otwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `detection.lern`"), "{stderr}");
    assert!(stderr.contains("otwatch.toml"), "{stderr}");
    let missing = Command::new(OTWATCH)
        .args(["live", "--config", "/nonexistent/otwatch.toml"])
        .output()
        .expect("otwatch");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/otwatch.toml"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A value the file gives that its flag refuses (`workers = 0`) is an error naming the file and
/// the key, not a flag the user never typed; the same value on the command line is clap's own
/// error about the flag.
#[test]
fn a_value_the_flag_refuses_names_the_file_and_key() {
    let dir = common::scratch("config-value");
    let config = dir.join("otwatch.toml");
    std::fs::write(&config, "[capture]\nworkers = 0\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(OTWATCH)
            .args(["replay", "--config"])
            .arg(&config)
            .args(extra)
            .arg(scenario())
            .output()
            .expect("otwatch");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("otwatch.toml: [capture] workers: invalid value '0'"),
        "{stderr}"
    );
    // The command line's own value overrides the file's.
    let (code, stderr) = run(&["--workers", "1", "-q"]);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::write(&config, "[capture]\nworkers = 2\n").unwrap();
    let (code, stderr) = run(&["--workers", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("[capture]"), "{stderr}");
}
