//! Diagnostics: what every stage reports about bad input, with a stable code and a place.
//!
//! Bad input is data, not `Err`: stages return `Vec<Diagnostic>` and keep going, so one run
//! reports every problem. A diagnostic is first *anchored* (a file, a position, or a JSON
//! pointer into one document of a file) and later *resolved* to `line:col` by
//! [`crate::load::resolve`], which re-reads spans only for the files that have problems.

use serde::Serialize;
use std::fmt;

/// How bad a problem is. Only errors make a repository invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $sev:ident, $title:literal; )*) => {
        /// Every diagnostic code rampart emits. Codes are stable: they never change meaning,
        /// and a retired code is never reused. The README lists them all.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( $(#[$doc])* $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The stable code, e.g. `R301`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// The default severity of this code.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }

            /// A short, fixed title (the SARIF rule name and the README table).
            pub fn title(self) -> &'static str {
                match self { $( Code::$variant => $title, )* }
            }
        }
    };
}

codes! {
    // settings (rampart.yaml) and reporting
    LimitAboveCeiling = "R001", Error, "limit above the hard ceiling";
    TooManyProblems = "R009", Warning, "more problems in the file than shown";
    // source: files and paths
    ReadFailed = "R100", Error, "file could not be read";
    FileTooLarge = "R101", Error, "file too large";
    TooManyFiles = "R102", Error, "too many files";
    RepoTooLarge = "R103", Error, "repository too large";
    Symlink = "R104", Error, "symbolic link refused";
    NotRegularFile = "R105", Error, "not a regular file";
    BadPath = "R106", Error, "path refused";
    // load: bytes to YAML
    InvalidUtf8 = "R110", Error, "invalid UTF-8";
    NulByte = "R111", Error, "NUL byte";
    YamlSyntax = "R112", Error, "YAML syntax error";
    DuplicateKey = "R113", Error, "duplicate key";
    CaseDuplicateKey = "R114", Error, "keys differ only in case";
    UnsupportedTag = "R115", Error, "unsupported YAML tag";
    TooDeep = "R116", Error, "nesting too deep";
    BudgetExceeded = "R117", Error, "node or alias budget exceeded";
    TooManyDocuments = "R118", Error, "too many documents";
    ScalarTooLarge = "R119", Error, "scalar too large";
    NonFiniteNumber = "R120", Error, "non-finite number";
    InexactNumber = "R121", Error, "number cannot be held exactly";
    Yaml11Scalar = "R122", Warning, "plugin config value that YAML 1.1 tools read differently";
    // schema
    UnknownApiVersion = "R200", Error, "unknown apiVersion";
    UnknownKind = "R201", Error, "unknown kind";
    MisplacedKind = "R202", Warning, "object in the directory of another kind";
    NotAnObject = "R203", Error, "document is not a mapping";
    TypeMismatch = "R210", Error, "wrong type";
    MissingField = "R211", Error, "required field missing";
    UnknownField = "R212", Error, "unknown field";
    NotAllowed = "R213", Error, "value not allowed";
    BadFormat = "R214", Error, "value does not match the expected format";
    OutOfRange = "R215", Error, "value out of range";
    SchemaViolation = "R219", Error, "schema violation";
    // semantics
    DuplicateName = "R300", Error, "duplicate name";
    UnknownTeam = "R301", Error, "unknown team";
    UnknownPlugin = "R302", Error, "unknown plugin";
    UnknownTenant = "R303", Error, "unknown tenant";
    SelectorMatchesNothing = "R304", Warning, "selector matches no tenant";
    PluginNotEnabled = "R305", Error, "rollout targets a tenant that does not enable the plugin";
    DuplicateEntry = "R306", Error, "duplicate list entry";
    InvalidQuantity = "R310", Error, "invalid quantity";
    QuotaAboveTier = "R311", Error, "quota above the tier's bound";
    InvalidDuration = "R312", Error, "invalid duration";
    StepsNotIncreasing = "R313", Error, "rollout steps do not strictly increase";
    StepsNotEndingAt100 = "R314", Error, "rollout steps do not end at 100";
    UnsafeRepoPath = "R317", Error, "path leaves the repository or is not portable";
    SelfReference = "R318", Warning, "tenant allows traffic from itself";
    VersionMismatch = "R319", Error, "plugin version differs from its package's version";
    LoginCaseConflict = "R320", Error, "one login spelled two ways";
    RolloutWithoutArtifact = "R321", Error, "rollout declares no artifact for its new version";
    RolloutPackageMismatch = "R322", Error, "rollout artifact does not name its toVersion";
    MinRequestsWithoutRequests = "R323", Error, "SLO sets minRequests without a requests query";
    PromqlMalformed = "R324", Error, "SLO query does not parse as PromQL";
    SecretLiteral = "R325", Error, "secret written as a literal in plugin config";
    // policy: Cedar policies, who made and approved a change, policy tests
    PolicySyntax = "R400", Error, "Cedar policy does not parse";
    PolicyInvalid = "R401", Error, "Cedar policy does not match the schema";
    DuplicatePolicyId = "R402", Error, "duplicate policy id";
    PolicyWarning = "R403", Warning, "Cedar validator warning";
    PolicyNoAdvice = "R404", Warning, "forbid policy without @advice";
    PolicyTooComplex = "R405", Error, "policy file too large or too deeply nested";
    PolicyNamesMissingTeam = "R406", Warning, "a policy names a team that does not exist";
    BreakGlass = "R407", Warning, "base policies invalid: decided by the default policies alone";
    UnknownAuthor = "R420", Warning, "author is not a member of any team";
    ApproverNotMember = "R421", Warning, "approval by a non-member does not count";
    SelfApproval = "R422", Warning, "the author's own approval does not count";
    ApproverAddedByChange = "R423", Warning, "approval by a member the change itself adds does not count";
    PolicyTestInvalid = "R430", Error, "policy test is malformed";
    // compile: what only building the Kubernetes objects reveals
    ReservedNamespace = "R500", Error, "tenant name reserved by Kubernetes";
    NoSuchStep = "R501", Error, "rollout step does not exist";
    CanaryWeightsOver100 = "R502", Error, "canary weights of a tenant exceed 100";
    DuplicateObject = "R503", Error, "two compiled objects share a name";
    // plugin supply chain
    IntegrityInvalid = "R600", Error, "artifact integrity malformed or of an unsupported algorithm";
    IntegrityMismatch = "R601", Error, "artifact does not have the declared digest";
    ArtifactMissing = "R602", Error, "artifact path could not be read";
    SignatureMalformed = "R610", Error, "signature malformed or truncated";
    SignatureUnknownKey = "R611", Error, "signed by a key not in keys/";
    SignatureWrongPublisher = "R612", Error, "signed by a key not allowed for the publisher";
    SignatureInvalid = "R613", Error, "signature does not verify";
    KeyInvalid = "R620", Error, "signing key does not parse";
    PlatformIncompatible = "R630", Error, "plugin does not support the platform version";
    RequirementMissing = "R631", Error, "a required plugin is not enabled by the tenant";
    RequirementConflict = "R632", Error, "a required plugin's version is outside the range";
    DependencyCycle = "R633", Error, "plugins require each other in a cycle";
    PermissionNotAllowed = "R634", Error, "plugin permission not allowed for the tenant's tier";
    PluginsOverQuota = "R635", Error, "enabled plugins need more than the tenant's quota";
    RolloutNotNewer = "R636", Error, "rollout version not newer than the running one";
    RolloutIncompatible = "R637", Error, "rollout version incompatible with a target tenant";
    ImpossibleRange = "R638", Error, "version range matches no version";
    ReleaseInFuture = "R639", Warning, "last release after the commit";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a problem is, before spans are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// No file (e.g. a repository-wide limit).
    None,
    /// A whole file.
    File { file: String },
    /// A known position (1-based line and column).
    Position { file: String, line: u32, column: u32 },
    /// A node of one document, by RFC 6901 JSON pointer (`""` is the document root).
    Node { file: String, doc: usize, pointer: String },
}

/// A resolved place: 1-based line and column, both 0 when only the file is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// One problem, ready to render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    #[serde(skip)]
    pub anchor: Anchor,
    /// Filled by [`crate::load::resolve`].
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The JSON pointer of the offending node, when the problem is about one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line the location points into, cropped to a window around the column
    /// when long (filled by resolve).
    #[serde(skip)]
    pub snippet: Option<String>,
    /// 1-based column of the location within `snippet`.
    #[serde(skip)]
    pub snippet_column: u32,
}

impl Diagnostic {
    pub fn new(code: Code, anchor: Anchor, message: impl Into<String>) -> Self {
        // the reported pointer is a plain JSON pointer; `#key` only steers the caret
        let pointer = match &anchor {
            Anchor::Node { pointer, .. } => Some(pointer.strip_suffix("#key").unwrap_or(pointer).to_owned()),
            _ => None,
        };
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            anchor,
            location: None,
            pointer,
            hint: None,
            snippet: None,
            snippet_column: 0,
        }
    }

    pub fn at_node(code: Code, file: &str, doc: usize, pointer: &str, message: impl Into<String>) -> Self {
        Self::new(
            code,
            Anchor::Node {
                file: file.to_owned(),
                doc,
                pointer: pointer.to_owned(),
            },
            message,
        )
    }

    pub fn at_file(code: Code, file: &str, message: impl Into<String>) -> Self {
        Self::new(code, Anchor::File { file: file.to_owned() }, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn file(&self) -> Option<&str> {
        match &self.anchor {
            Anchor::None => None,
            Anchor::File { file } | Anchor::Position { file, .. } | Anchor::Node { file, .. } => Some(file),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sort for output: by file, then position, then code, so every run prints the same order
/// whatever the thread schedule was.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        let key = |d: &Diagnostic| {
            let (line, col) = d.location.as_ref().map_or((0, 0), |l| (l.line, l.column));
            (d.file().map(str::to_owned), line, col, d.code, d.message.clone())
        };
        key(a).cmp(&key(b))
    });
}

/// Counts by severity.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub errors: usize,
    pub warnings: usize,
}

pub fn counts(diags: &[Diagnostic]) -> Counts {
    let mut c = Counts::default();
    for d in diags {
        match d.severity {
            Severity::Error => c.errors += 1,
            Severity::Warning => c.warnings += 1,
        }
    }
    c
}

/// Whether `c` may forge or disguise text where it is shown: a control character (a newline
/// starts a workflow command, ESC a terminal sequence) or a bidirectional control, which
/// shows text in another order than it is (Trojan Source, CVE-2021-42574).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `s` with every hidden character (see [`is_hidden`]) but those in `keep` written as its
/// escape (`\u{202e}`, `\n`): seen, not obeyed.
pub fn visible(s: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if is_hidden(ch) && !keep.contains(&ch) {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Quote a user value for a message: backticks, with control characters made visible so a
/// crafted name cannot forge extra output lines.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('`');
    let head: String = s.chars().take(200).collect();
    out.push_str(&visible(&head, &[]));
    if s.chars().count() > 200 {
        out.push('…');
    }
    out.push('`');
    out
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
