//! Mutation fuzzing of the YAML loader: thousands of corrupted variants of real config files
//! (seeded, so a failure reproduces) must never panic, must stay within the budget, and every
//! document that loads must have a span for every node.

use crate::support::root;
use rampart::config::Limits;
use rampart::load::{self, yaml};
use rampart::source::SourceFile;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"!x ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"- ",
    b": ",
    b"---\n",
    b"...\n",
    b"\t",
    b"\r",
    b"\0",
    b"\xff",
    b"\xef\xbb\xbf",
    b"'",
    b"\"",
    b"|\n",
    b">-\n",
    b"#",
    b"%YAML 1.2\n",
    b"? ",
    b"1e999",
    b".nan",
    b"0755",
    b"~",
    b"\\u0000",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            _ => {
                // duplicate a slice: repeated keys, deeper nesting
                let start = rng.below(out.len() + 1);
                let end = (start + rng.below(64)).min(out.len());
                let piece: Vec<u8> = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![root().join("testdata"), root().join("examples/platform-config")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.len() < 64 * 1024 {
                    files.push(bytes);
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn mutated_config_files_never_panic_and_stay_bounded() {
    let seeds = seeds();
    assert!(seeds.len() > 50);
    let limits = Limits::default();
    let mut rng = Rng(0x5eed_2026_1125);
    let mut loaded = 0;
    for round in 0..4000 {
        let pick = rng.below(seeds.len());
        let input = mutate(&mut rng, &seeds[pick]);
        let start = Instant::now();
        let file = SourceFile {
            path: "teams/fuzz.yaml".into(),
            bytes: input.clone(),
        };
        let (f, diags) = load::load_file(file, &limits);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "round {round}: slow on {:?}",
            String::from_utf8_lossy(&input)
        );
        if diags.is_empty() {
            loaded += 1;
            // whatever the schema says about it, every problem lands on a line of the file
            let mut f = f;
            let outcome = rampart::validate::file(&mut f);
            let mut found = outcome.diagnostics;
            load::resolve(&mut found, std::slice::from_ref(&f), &limits);
            for d in &found {
                let line = d.location.as_ref().map_or(0, |l| l.line);
                assert!(
                    line >= 1,
                    "round {round}: {} not placed in {:?}",
                    d.message,
                    String::from_utf8_lossy(&input)
                );
            }
            // every node of every document can be placed in the file
            let docs = yaml::parse(&f.text, &limits).expect("parses twice the same way");
            let mut wanted = HashMap::new();
            for (doc, value) in docs.iter().enumerate() {
                let mut ptrs = Vec::new();
                pointers(value, String::new(), &mut ptrs);
                wanted.insert(doc, ptrs);
            }
            let spans = yaml::spans(&f.text, &limits, &wanted);
            for (doc, ptrs) in &wanted {
                for p in ptrs {
                    let at = spans.get(*doc).and_then(|s| yaml::locate(s, p, false));
                    assert!(
                        at.is_some_and(|(l, c)| l >= 1 && c >= 1),
                        "round {round}: no place for {p:?} in {:?}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        } else {
            for d in &diags {
                assert!(
                    d.code.as_str().starts_with("R1"),
                    "round {round}: load reported {}",
                    d.code
                );
            }
        }
    }
    assert!(
        loaded > 500,
        "too few mutants loaded ({loaded}): the mutations are too destructive to test spans"
    );
}

fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Array(xs) => {
            for (i, x) in xs.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{at}/{}", load::escape_pointer(k)), out);
            }
        }
        _ => {}
    }
    out.push(at);
}
