//! The reconciler's decisions, pure: from what a target records and the branch's history,
//! where to start; from the verdicts on each commit, how far to apply and what blocks.
//! No IO: the driver (`reconcile.rs`) reads the history and the verdicts and does what these
//! functions decide, so tests call them directly.

use crate::target::Applied;

/// How the branch's history relates to the commit a target holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ancestry {
    /// The held commit is on the tip's first-parent line: the commits after it, oldest first.
    FirstParent(Vec<String>),
    /// The tip contains the held commit, but not on its first-parent line (it came in through
    /// a merge's second parent): the change from it to the tip is one step.
    Merged,
    /// The tip no longer contains the held commit (a force-push); `present` when the commit is
    /// still in the mirror, so its tree can be compared.
    Rewritten { present: bool },
}

/// Where a reconcile of one target starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The target holds the tip.
    UpToDate,
    /// The target holds nothing: the tip is applied as it is (recorded `first-apply`).
    FirstApply,
    /// Authorise these steps in order.
    Steps(Vec<Step>),
    /// Nothing can be authorised: why, and the way out.
    Blocked(Block),
}

/// One change to authorise: from `from` to `to`, judged by `from`'s rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: String,
    pub to: String,
    /// The decision word recorded when it is allowed (`allowed`, `history-rewritten`,
    /// `baseline`).
    pub decision: &'static str,
}

/// Why a target stops, and the way out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// The commit that is not applied (`None` when no commit is to blame).
    pub commit: Option<String>,
    /// `denied`, `invalid`, `no-pull-request`, `unknown-baseline`, `history-rewritten`.
    pub kind: &'static str,
    pub reasons: Vec<String>,
    pub way_out: String,
}

/// Where to start, from what the target holds, the tip, the operator's `--baseline` and the
/// ancestry of the held commit (asked only when needed).
pub fn start(applied: &Applied, tip: &str, baseline: Option<&str>, ancestry: impl FnOnce(&str) -> Ancestry) -> Start {
    let from = match (&applied.commit, baseline) {
        (Some(c), _) if c == tip => return Start::UpToDate,
        (Some(c), _) => c.clone(),
        (None, Some(b)) if b == tip => {
            return Start::Blocked(Block {
                commit: Some(tip.to_owned()),
                kind: "unknown-baseline",
                reasons: vec!["--baseline is the branch's tip, so it would authorise nothing".to_owned()],
                way_out: "give the commit the target was built from".to_owned(),
            });
        }
        (None, Some(b)) => {
            return Start::Steps(vec![Step {
                from: b.to_owned(),
                to: tip.to_owned(),
                decision: "baseline",
            }]);
        }
        (None, None) if applied.unknown => {
            return Start::Blocked(Block {
                commit: None,
                kind: "unknown-baseline",
                reasons: vec![
                    "the target holds objects but records no applied commit (or a record that is not rampart's)"
                        .to_owned(),
                ],
                way_out: "start serve with --baseline REV (the commit the target was built from; the change from \
                          it is authorised), or empty the target"
                    .to_owned(),
            });
        }
        (None, None) => return Start::FirstApply,
    };
    match ancestry(&from) {
        Ancestry::FirstParent(commits) => {
            let mut prev = from;
            Start::Steps(
                commits
                    .into_iter()
                    .map(|c| Step {
                        from: std::mem::replace(&mut prev, c.clone()),
                        to: c,
                        decision: "allowed",
                    })
                    .collect(),
            )
        }
        Ancestry::Merged => Start::Steps(vec![Step {
            from,
            to: tip.to_owned(),
            decision: "allowed",
        }]),
        Ancestry::Rewritten { present: true } => Start::Steps(vec![Step {
            from,
            to: tip.to_owned(),
            decision: "history-rewritten",
        }]),
        Ancestry::Rewritten { present: false } => Start::Blocked(Block {
            commit: Some(tip.to_owned()),
            kind: "history-rewritten",
            reasons: vec![format!(
                "the branch no longer contains {}, the commit the target holds, and the repository does not have it \
                 any more, so the change from it cannot be authorised",
                short(&from)
            )],
            way_out: "restore the branch, or start serve with --baseline REV naming a commit of the new history whose \
                      tree the target holds"
                .to_owned(),
        }),
    }
}

/// The verdict on one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Stopped(Block),
}

/// How far to apply: the index of the last step allowed before the first that is not (`None`
/// when the first is not), and the block that stopped the walk.
pub fn settle(verdicts: &[Verdict]) -> (Option<usize>, Option<&Block>) {
    let stop = verdicts.iter().position(|v| !matches!(v, Verdict::Allowed));
    let last = match stop {
        Some(0) => None,
        Some(i) => Some(i - 1),
        None => verdicts.len().checked_sub(1),
    };
    let block = stop.and_then(|i| match &verdicts[i] {
        Verdict::Stopped(b) => Some(b),
        Verdict::Allowed => None,
    });
    (last, block)
}

/// The first 12 digits of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(40)
    }

    fn held(c: char) -> Applied {
        Applied {
            commit: Some(id(c)),
            unknown: false,
        }
    }

    #[test]
    fn a_target_at_the_tip_has_nothing_to_do() {
        let s = start(&held('a'), &id('a'), None, |_| panic!("no history needed"));
        assert_eq!(s, Start::UpToDate);
    }

    #[test]
    fn each_commit_after_the_held_one_is_a_step_judged_by_its_parent() {
        let s = start(&held('a'), &id('c'), None, |from| {
            assert_eq!(from, id('a'));
            Ancestry::FirstParent(vec![id('b'), id('c')])
        });
        let Start::Steps(steps) = s else { panic!("{s:?}") };
        assert_eq!(
            steps.iter().map(|s| (s.from.clone(), s.to.clone())).collect::<Vec<_>>(),
            vec![(id('a'), id('b')), (id('b'), id('c'))]
        );
    }

    #[test]
    fn a_rewritten_history_is_one_flagged_step_or_blocked_when_the_commit_is_gone() {
        let s = start(&held('a'), &id('z'), None, |_| Ancestry::Rewritten { present: true });
        assert_eq!(
            s,
            Start::Steps(vec![Step {
                from: id('a'),
                to: id('z'),
                decision: "history-rewritten"
            }])
        );
        let s = start(&held('a'), &id('z'), None, |_| Ancestry::Rewritten { present: false });
        assert!(
            matches!(
                s,
                Start::Blocked(Block {
                    kind: "history-rewritten",
                    ..
                })
            ),
            "{s:?}"
        );
    }

    #[test]
    fn an_empty_target_is_a_first_apply_and_an_unknown_one_is_blocked_without_a_baseline() {
        assert_eq!(
            start(&Applied::default(), &id('a'), None, |_| unreachable!()),
            Start::FirstApply
        );
        let unknown = Applied {
            commit: None,
            unknown: true,
        };
        assert!(matches!(
            start(&unknown, &id('a'), None, |_| unreachable!()),
            Start::Blocked(Block {
                kind: "unknown-baseline",
                ..
            })
        ));
        assert_eq!(
            start(&unknown, &id('b'), Some(&id('a')), |_| unreachable!()),
            Start::Steps(vec![Step {
                from: id('a'),
                to: id('b'),
                decision: "baseline"
            }])
        );
    }

    #[test]
    fn apply_stops_before_the_first_commit_that_is_not_allowed() {
        let b = Block {
            commit: Some(id('c')),
            kind: "denied",
            reasons: vec![],
            way_out: String::new(),
        };
        let v = [
            Verdict::Allowed,
            Verdict::Allowed,
            Verdict::Stopped(b.clone()),
            Verdict::Allowed,
        ];
        assert_eq!(settle(&v), (Some(1), Some(&b)));
        assert_eq!(settle(&[Verdict::Stopped(b.clone())]), (None, Some(&b)));
        assert_eq!(settle(&[Verdict::Allowed, Verdict::Allowed]), (Some(1), None));
        assert_eq!(settle(&[]), (None, None));
    }
}
