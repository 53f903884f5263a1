//! Subresource Integrity strings: `sha256-`, `sha384-` or `sha512-` and a base64 digest.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest;
use std::fmt;

/// A parsed integrity string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    algorithm: &'static str,
    digest: Vec<u8>,
}

const ALGORITHMS: [(&str, usize); 3] = [("sha256", 32), ("sha384", 48), ("sha512", 64)];

impl Integrity {
    /// Parse one integrity string; why not, in words, when it is not one.
    pub fn parse(s: &str) -> Result<Integrity, String> {
        let Some((algo, b64)) = s.split_once('-') else {
            return Err(format!("integrity `{}` is not `<algorithm>-<base64 digest>`", crop(s)));
        };
        let Some(&(algorithm, len)) = ALGORITHMS.iter().find(|(a, _)| *a == algo) else {
            return Err(format!(
                "integrity uses digest algorithm `{}`, which is not supported (sha256, sha384 or sha512)",
                crop(algo)
            ));
        };
        let digest = STANDARD
            .decode(b64)
            .map_err(|_| format!("the {algorithm} digest is not valid base64"))?;
        if digest.len() != len {
            return Err(format!(
                "the {algorithm} digest is {} bytes, not {len} (cut short or padded?)",
                digest.len()
            ));
        }
        Ok(Integrity { algorithm, digest })
    }

    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The integrity string of `bytes` with `algorithm` (one of the supported ones).
    pub fn of(algorithm: &str, bytes: &[u8]) -> Integrity {
        let digest = match algorithm {
            "sha256" => sha2::Sha256::digest(bytes).to_vec(),
            "sha384" => sha2::Sha384::digest(bytes).to_vec(),
            _ => sha2::Sha512::digest(bytes).to_vec(),
        };
        let algorithm = ALGORITHMS
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map_or("sha512", |(a, _)| a);
        Integrity { algorithm, digest }
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.algorithm, STANDARD.encode(&self.digest))
    }
}

/// Whether `bytes` have the digest `expected` declares.
pub fn digest_matches(expected: &Integrity, bytes: &[u8]) -> bool {
    Integrity::of(expected.algorithm, bytes) == *expected
}

fn crop(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_npm_prints_and_refuses_the_rest() {
        // `printf 'hello' | openssl dgst -sha256 -binary | base64`
        let sri = Integrity::parse("sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=").unwrap();
        assert!(digest_matches(&sri, b"hello"));
        assert!(!digest_matches(&sri, b"hello!"));
        assert_eq!(
            Integrity::of("sha256", b"hello").to_string(),
            "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
        );
        for (bad, why) in [
            ("md5-XUFAKrxLKna5cZ2REBfFkg==", "not supported"),
            ("sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOL", "bytes, not 32"),
            ("sha512-%%%", "not valid base64"),
            ("nodash", "is not `<algorithm>"),
        ] {
            let e = Integrity::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
