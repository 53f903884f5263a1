//! The bundled example validates clean: the README's main command.

use crate::support::*;

#[test]
fn example_platform_config_is_valid() {
    let run = rampart(&["validate", "examples/platform-config"], Some(&root()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
    let json = rampart(
        &["validate", "examples/platform-config", "--format", "json"],
        Some(&root()),
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["summary"]["objects"].as_u64().unwrap() >= 5 + 8 + 6 + 2);
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    assert_eq!(rampart(&["validate", "--format", "xml"], None).code, 1);
    assert_eq!(rampart(&["frobnicate"], None).code, 1);
    let help = rampart(&["validate", "--help"], None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--rev"));
    assert_eq!(rampart(&["validate", "/nonexistent/repo"], None).code, 1);
}
