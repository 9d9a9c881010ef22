//! Golden tests for `hookd check`: each `tests/check/NAME.toml` against `NAME.out`.
//!
//! The `.out` file holds the exit code, then stdout and stderr. Run with `UPDATE_GOLDEN=1` to
//! rewrite the expectations after an intended change, and review the diff.

use std::path::Path;
use std::process::Command;

#[test]
fn check_output_matches_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("check");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "golden cases missing in {}",
        dir.display()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let output = Command::new(hookd_testkit::hookd_binary())
            .args(["check", "--config", name])
            .current_dir(&dir)
            .env_remove("HOOKD_CHECK_TEST_UNSET")
            .output()
            .unwrap();
        let actual = format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let golden = case.with_extension("out");
        if update {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
