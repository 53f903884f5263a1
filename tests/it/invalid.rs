//! Every case in `testdata/invalid/` (laid over `testdata/base/`) against its snapshot.

use crate::support::*;
use std::collections::BTreeSet;

#[test]
fn base_repo_is_valid() {
    let repo = repo_with(None);
    let run = rampart(&["validate", repo.path().to_str().unwrap()], None);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn invalid_cases_match_their_snapshots() {
    let mut failures = Vec::new();
    let mut seen_codes = BTreeSet::new();
    let mut cases: Vec<_> = std::fs::read_dir(root().join("testdata/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "cases missing");
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_owned();
        let repo = repo_with(Some(&case));
        let run = rampart(&["validate", "."], Some(repo.path()));
        assert_bounded(&run, &name);
        let codes = codes(&run.stdout);
        // the case is named after the code it demonstrates
        let expected = &name[..4];
        if !codes.iter().any(|c| c == expected) {
            failures.push(format!("{name}: expected {expected}, got {codes:?}\n{}", run.stdout));
        }
        let warning_only = codes
            .iter()
            .all(|c| ["R122", "R202", "R304", "R318", "R403", "R404", "R406"].contains(&c.as_str()));
        let want_exit = if warning_only { 0 } else { 3 };
        if run.code != want_exit {
            failures.push(format!("{name}: exit {} (want {want_exit})", run.code));
        }
        seen_codes.extend(codes);
        if let Err(e) = snapshot(&format!("invalid/{name}.txt"), &transcript(&run)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // the cases here, the generated ones in `hostile` and the check and policy-test cases in
    // `policy` together cover every code
    let generated = [
        "R100", "R101", "R102", "R104", "R105", "R106", "R407", "R420", "R421", "R422", "R423", "R430", "R501", "R502",
        "R503", "R639",
    ];
    for code in rampart::diagnostic::Code::ALL {
        let c = code.as_str();
        assert!(
            seen_codes.contains(c) || generated.contains(&c),
            "no test case covers {c}"
        );
    }
}

/// BOM, CRLF, `.yml`, several and empty documents, comment-only files, anchors, aliases and
/// merge keys, and YAML 1.1 look-alikes (`on`, `NO`, `yes`) as logins: all fine.
#[test]
fn encodings_and_layouts_that_are_valid() {
    let repo = repo_with(Some(&root().join("testdata/valid/encodings")));
    let run = rampart(&["validate", "."], Some(repo.path()));
    assert_eq!(run.code, 0, "{}", run.stdout);
    snapshot("valid/encodings.txt", &transcript(&run)).unwrap();
}

#[test]
fn readme_documents_every_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for code in rampart::diagnostic::Code::ALL {
        let anchor = format!("<a id=\"{}\"></a>{}", code.as_str().to_lowercase(), code.as_str());
        assert!(readme.contains(&anchor), "README lacks {}", code.as_str());
    }
}
