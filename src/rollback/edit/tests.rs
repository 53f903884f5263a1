//! The promote's edit on small files: the loader reads what it wrote, and every byte it had
//! no reason to touch is still there.

use super::*;
use crate::load::load_file;
use crate::source::SourceFile;

const PLUGIN: &str = "\
apiVersion: rampart.dev/v1
kind: Plugin
metadata:
  name: techdocs  # the docs plugin
spec:
  publisher: backstage
  version: 1.12.0   # pinned
  artifact:
    package: \"@backstage/plugin-techdocs@1.12.0\"
    integrity: 'sha256-LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564='

  # what it needs
  requires:
    plugins:
      catalog: ^2.1
";

const ROLLOUT: &str = "\
apiVersion: rampart.dev/v1
kind: Rollout
metadata:
  name: techdocs-1-13
spec:
  plugin: techdocs
  toVersion: 1.13.0
  steps:
    - {weight: 10, pause: 5m}
";

const SIG: &str = "untrusted comment: signature\nRUTE\"x\\y\ntrusted comment: t\nabc\n";

fn promote_of(signature: Option<&str>) -> Promote {
    Promote {
        plugin_file: "plugins/techdocs.yaml".into(),
        plugin_doc: 0,
        version: "1.13.0".into(),
        package: "@backstage/plugin-techdocs@1.13.0".into(),
        integrity: "sha256-NEWNEWNEWNEW+/=".into(),
        signature: signature.map(str::to_owned),
        rollout_file: "rollouts/techdocs.yaml".into(),
        rollout_doc: 0,
    }
}

fn run(p: &Promote, files: &[(&str, &str)]) -> Result<BTreeMap<String, Option<String>>, String> {
    let files: BTreeMap<String, String> = files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    promote(p, |path| files.get(path).cloned())
}

/// The documents the repo's own loader reads from `text` (no diagnostic allowed).
fn load(text: &str) -> Vec<Value> {
    let (f, d) = load_file(
        SourceFile {
            path: "t.yaml".into(),
            bytes: text.as_bytes().to_vec(),
        },
        &Limits::default(),
    );
    assert!(d.is_empty(), "{d:?}\n{text}");
    f.docs
}

#[test]
fn plain_and_quoted_scalars_are_replaced_and_nothing_else_moves() {
    let out = run(
        &promote_of(None),
        &[("plugins/techdocs.yaml", PLUGIN), ("rollouts/techdocs.yaml", ROLLOUT)],
    )
    .unwrap();
    let plugin = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert_eq!(
        plugin,
        PLUGIN
            .replace("version: 1.12.0   # pinned", "version: \"1.13.0\"   # pinned")
            .replace(
                "package: \"@backstage/plugin-techdocs@1.12.0\"",
                "package: \"@backstage/plugin-techdocs@1.13.0\""
            )
            .replace(
                "integrity: 'sha256-LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564='",
                "integrity: \"sha256-NEWNEWNEWNEW+/=\""
            )
    );
    let doc = &load(plugin)[0];
    assert_eq!(doc["spec"]["version"], "1.13.0");
    assert_eq!(doc["spec"]["artifact"]["integrity"], "sha256-NEWNEWNEWNEW+/=");
    // the rollout was the file's only document: the file goes
    assert_eq!(out["rollouts/techdocs.yaml"], None);
}

#[test]
fn a_signature_is_added_after_the_artifact_block() {
    let out = run(
        &promote_of(Some(SIG)),
        &[("plugins/techdocs.yaml", PLUGIN), ("rollouts/techdocs.yaml", ROLLOUT)],
    )
    .unwrap();
    let plugin = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert!(
        plugin.contains(
            // (as the literal block `scripts/sign-plugin` writes)
            "    integrity: \"sha256-NEWNEWNEWNEW+/=\"\n  signature: |\n    untrusted comment: signature\n    RUTE\"x\\y\n    trusted comment: t\n    abc\n\n  # what it needs\n"
        ),
        "{plugin}"
    );
    assert_eq!(load(plugin)[0]["spec"]["signature"], SIG);
}

#[test]
fn a_signature_that_cannot_be_a_plain_block_is_quoted() {
    let odd = "untrusted comment: x\n  indented\n";
    let out = run(
        &promote_of(Some(odd)),
        &[("plugins/techdocs.yaml", PLUGIN), ("rollouts/techdocs.yaml", ROLLOUT)],
    )
    .unwrap();
    let plugin = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert!(
        plugin.contains("  signature: \"untrusted comment: x\\n  indented\\n\"\n"),
        "{plugin}"
    );
    assert_eq!(load(plugin)[0]["spec"]["signature"], odd);
}

#[test]
fn a_block_signature_is_replaced_or_removed() {
    let signed = PLUGIN.replace(
        "\n  # what it needs",
        "  signature: |\n    untrusted comment: old\n    RWOLD\n\n    trusted comment: old\n    xyz\n  # what it needs",
    );
    let files = [
        ("plugins/techdocs.yaml", signed.as_str()),
        ("rollouts/techdocs.yaml", ROLLOUT),
    ];
    let out = run(&promote_of(Some(SIG)), &files).unwrap();
    let plugin = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert_eq!(load(plugin)[0]["spec"]["signature"], SIG);
    assert!(
        plugin.contains("  signature: |\n    untrusted comment: signature\n    RUTE"),
        "{plugin}"
    );
    assert!(plugin.contains("    abc\n  # what it needs\n"), "{plugin}");

    let out = run(&promote_of(None), &files).unwrap();
    let plugin = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert!(load(plugin)[0]["spec"].get("signature").is_none());
    assert!(!plugin.contains("RWOLD") && !plugin.contains("signature"), "{plugin}");
    assert!(plugin.contains("G3hSuFU=") || plugin.contains("NEWNEW"), "{plugin}");
    assert!(plugin.contains("\n  # what it needs\n  requires:"), "{plugin}");
}

#[test]
fn a_flow_artifact_is_edited_in_place() {
    let flow = "kind: Plugin\nmetadata: {name: techdocs}\nspec:\n  publisher: backstage\n  version: \"1.12.0\"\n  artifact: {package: pkg@1.12.0, integrity: sha256-OLD}\n";
    let out = run(
        &promote_of(None),
        &[("plugins/techdocs.yaml", flow), ("rollouts/techdocs.yaml", ROLLOUT)],
    )
    .unwrap();
    assert_eq!(
        out["plugins/techdocs.yaml"].as_deref().unwrap(),
        "kind: Plugin\nmetadata: {name: techdocs}\nspec:\n  publisher: backstage\n  version: \"1.13.0\"\n  artifact: {package: \"@backstage/plugin-techdocs@1.13.0\", integrity: \"sha256-NEWNEWNEWNEW+/=\"}\n"
    );
}

#[test]
fn the_rollout_document_is_cut_from_a_file_of_several() {
    let other = "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: other\nspec:\n  plugin: catalog\n";
    let cases = [
        // first, without a leading `---`
        (format!("{ROLLOUT}---\n{other}"), 0, format!("---\n{other}")),
        // first, with one, and a comment
        (
            format!("# rollouts\n---\n{ROLLOUT}---\n{other}"),
            0,
            format!("# rollouts\n---\n{other}"),
        ),
        // last
        (format!("{other}---\n# the new docs\n{ROLLOUT}"), 1, other.to_owned()),
        // in the middle, after an empty document
        (
            format!("---\n{other}---\n# nothing\n---\n{ROLLOUT}---\n{other}"),
            1,
            format!("---\n{other}---\n# nothing\n---\n{other}"),
        ),
        // with an explicit end
        (format!("{other}...\n---\n{ROLLOUT}...\n"), 1, format!("{other}...\n")),
    ];
    for (text, index, expected) in cases {
        let mut p = promote_of(None);
        p.rollout_doc = index;
        let out = run(
            &p,
            &[("plugins/techdocs.yaml", PLUGIN), ("rollouts/techdocs.yaml", &text)],
        )
        .unwrap();
        let got = out["rollouts/techdocs.yaml"].as_deref().unwrap();
        assert_eq!(got, expected, "from:\n{text}");
        assert!(load(got).iter().all(|d| d["metadata"]["name"] == "other"), "{got}");
    }
}

#[test]
fn plugin_and_rollout_in_one_file() {
    let text = format!("{PLUGIN}---\n{ROLLOUT}");
    let mut p = promote_of(None);
    p.rollout_file = p.plugin_file.clone();
    p.rollout_doc = 1;
    let out = run(&p, &[("plugins/techdocs.yaml", &text)]).unwrap();
    assert_eq!(out.len(), 1);
    let docs = load(out["plugins/techdocs.yaml"].as_deref().unwrap());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["spec"]["version"], "1.13.0");
}

#[test]
fn crlf_files_keep_their_line_ends() {
    let plugin = PLUGIN.replace('\n', "\r\n");
    let out = run(
        &promote_of(Some("sig")),
        &[("plugins/techdocs.yaml", &plugin), ("rollouts/techdocs.yaml", ROLLOUT)],
    )
    .unwrap();
    let text = out["plugins/techdocs.yaml"].as_deref().unwrap();
    assert!(text.contains("  signature: \"sig\"\r\n"), "{text:?}");
    assert!(!text.replace("\r\n", "").contains('\n'), "{text:?}");
    assert_eq!(load(text)[0]["spec"]["version"], "1.13.0");
}

fn error_of(plugin: &str, rollout: &str) -> String {
    run(
        &promote_of(None),
        &[("plugins/techdocs.yaml", plugin), ("rollouts/techdocs.yaml", rollout)],
    )
    .unwrap_err()
}

#[test]
fn what_cannot_be_rewritten_is_refused_with_its_line() {
    // an anchored value is rewritten, its anchor kept, unless an alias repeats it
    let anchored = PLUGIN.replace("version: 1.12.0", "version: &v 1.12.0");
    let out = run(
        &promote_of(None),
        &[
            ("plugins/techdocs.yaml", &anchored),
            ("rollouts/techdocs.yaml", ROLLOUT),
        ],
    )
    .unwrap();
    assert!(
        out["plugins/techdocs.yaml"]
            .as_deref()
            .unwrap()
            .contains("version: &v \"1.13.0\"   # pinned")
    );
    let aliased = format!("{anchored}  pinned: *v\n");
    assert_eq!(
        error_of(&aliased, ROLLOUT),
        "plugins/techdocs.yaml:6: the plugin's version, artifact or signature is not written as plain or quoted \
         scalars rampart can rewrite (an anchor, an alias, a flow mapping?); edit it by hand"
    );
    let alias = PLUGIN
        .replace("  publisher: backstage", "  publisher: &p backstage")
        .replace("version: 1.12.0", "version: *p");
    assert_eq!(
        error_of(&alias, ROLLOUT),
        "plugins/techdocs.yaml:7: `/spec/version` is an alias, not a scalar rampart can rewrite; edit it by hand"
    );
    let wrapped = PLUGIN.replace(
        "package: \"@backstage/plugin-techdocs@1.12.0\"",
        "package:\n      \"@backstage/plugin-techdocs@1.12.0\"",
    );
    // (a value on the line after its key is still found)
    assert!(
        run(
            &promote_of(None),
            &[("plugins/techdocs.yaml", &wrapped), ("rollouts/techdocs.yaml", ROLLOUT)]
        )
        .is_ok()
    );
    let multiline = PLUGIN.replace("version: 1.12.0   # pinned", "version: 1.12\n    .0");
    assert!(
        error_of(&multiline, ROLLOUT).starts_with("plugins/techdocs.yaml"),
        "{}",
        error_of(&multiline, ROLLOUT)
    );
    assert_eq!(
        error_of(ROLLOUT, ROLLOUT),
        "document 0 of `plugins/techdocs.yaml` is not a Plugin"
    );
    assert_eq!(
        error_of(PLUGIN, &ROLLOUT.replace("plugin: techdocs", "plugin: catalog")),
        "the Rollout in document 0 of `rollouts/techdocs.yaml` rolls out `catalog`, not the plugin `techdocs`"
    );
    assert_eq!(
        run(&promote_of(None), &[("plugins/techdocs.yaml", PLUGIN)]).unwrap_err(),
        "`rollouts/techdocs.yaml` is not in the tree"
    );
}
