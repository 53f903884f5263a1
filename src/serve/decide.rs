//! The reconciler's decisions, pure: from what a target records and the branch's history,
//! where to start; from the verdicts on each commit, how far to apply and what blocks.
//! No IO: the driver (`reconcile.rs`) reads the history and the verdicts and does what these
//! functions decide, so tests call them directly.

use crate::target::Applied;
use std::collections::BTreeSet;

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
        (None, Some(b)) => {
            // (the tip itself adopts the target: nothing to judge, the tip's tree is written)
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

/// How many later commits are tried as the fix of a blocked one, per reconcile.
pub const MAX_FIX_TRIES: usize = 50;

/// What [`walk`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk<J> {
    /// The steps to apply, in order, each with its judgement. A step that fixes a blocked
    /// commit goes from the last allowed commit over the blocked ones (`decision` `fixes`).
    pub allowed: Vec<(Step, J)>,
    /// Blocked commits that a later allowed change superseded: never applied on their own,
    /// and their blocks.
    pub superseded: Vec<Block>,
    /// The block the walk stopped at (nothing after it is applied).
    pub block: Option<Block>,
}

impl<J> Walk<J> {
    /// The commit the target is brought to (`None`: nothing to apply).
    pub fn last(&self) -> Option<&str> {
        self.allowed.last().map(|(s, _)| s.to.as_str())
    }
}

/// What [`walk`] asks of the world.
pub trait Judge {
    type J;
    type E;
    /// Judge one step: the change `from` → `to` with `to`'s author and approvals.
    fn judge(&mut self, step: &Step) -> Result<Result<Self::J, Block>, Self::E>;
    /// What differs between two commits, as `path#pointer` items: the JSON pointer of every
    /// leaf value that differs in a YAML file (`tenants/a.yaml#/0/spec/quota/cpu`, the number
    /// being the document), or `path#` for a whole file that is not YAML or does not parse.
    fn touched(&mut self, from: &str, to: &str) -> Result<BTreeSet<String>, Self::E>;
    /// Whether every item holds at `to` exactly what it held at `from` (for `path#`: the
    /// file's bytes; for a pointer: the value it resolves to, absent included).
    fn reverted(&mut self, items: &BTreeSet<String>, from: &str, to: &str) -> Result<bool, Self::E>;
}

/// Judge `steps` in order, stopping at the first step that is not allowed — never skipping
/// it — unless a later commit **reverts** it. A later commit F unblocks the target when
/// - every value a blocked commit changed (a field of a YAML document, or a whole other file)
///   holds at F exactly what it held before the block (a revert: `git revert`, or the value
///   written back by hand);
/// - every commit between that is not itself blocked is allowed on its own (the blocked ones
///   must be reverted too);
/// - the combined change, from the last allowed commit to F, is allowed with F's author and
///   approvals.
///
/// Nothing else unblocks: an approved commit that changes the blocked value to something
/// else, edits the same file, or moves the value around could carry the denied change along
/// (the hostile reviews did all three), so the way out of a denial is a revert, then the
/// change made again with the approvals it needs. The blocked commits are never applied
/// alone (`superseded`). At most [`MAX_FIX_TRIES`] later commits are tried.
pub fn walk<Jd: Judge>(steps: &[Step], world: &mut Jd) -> Result<Walk<Jd::J>, Jd::E> {
    let mut out = Walk {
        allowed: Vec::new(),
        superseded: Vec::new(),
        block: None,
    };
    let mut i = 0;
    while i < steps.len() {
        // (a step's `from` is the last allowed commit: a fix moved it)
        let from = out
            .allowed
            .last()
            .map_or_else(|| steps[0].from.clone(), |(s, _)| s.to.clone());
        let step = Step {
            from: from.clone(),
            ..steps[i].clone()
        };
        let block = match world.judge(&step)? {
            Ok(j) => {
                out.allowed.push((step, j));
                i += 1;
                continue;
            }
            Err(block) => block,
        };
        if steps[i].decision != "allowed" {
            // (a first apply, a baseline or a rewritten history is one step: nothing to fix)
            out.block = Some(block);
            break;
        }
        let mut blocks = vec![block];
        let mut must_revert = world.touched(&steps[i].from, &steps[i].to)?;
        let mut along = Vec::new();
        let mut fixed = None;
        for (k, later) in steps.iter().enumerate().skip(i + 1).take(MAX_FIX_TRIES) {
            // the later commit's own change, from its parent
            match world.judge(later)? {
                Err(b) => {
                    must_revert.extend(world.touched(&later.from, &later.to)?);
                    blocks.push(b);
                    continue;
                }
                Ok(j) => along.push((later.clone(), j)),
            }
            if !world.reverted(&must_revert, &from, &later.to)? {
                continue;
            }
            let fix = Step {
                from: from.clone(),
                to: later.to.clone(),
                decision: "fixes",
            };
            if let Ok(j) = world.judge(&fix)? {
                fixed = Some((k, fix, j));
                break;
            }
        }
        match fixed {
            Some((k, fix, j)) => {
                out.superseded.append(&mut blocks);
                // the allowed commits between are applied with the fix (their own records)
                along.pop();
                out.allowed.append(&mut along);
                out.allowed.push((fix, j));
                i = k + 1;
            }
            None => {
                out.block = Some(blocks.swap_remove(0));
                break;
            }
        }
    }
    Ok(out)
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
            rendered: None,
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
            rendered: None,
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

    fn steps(ids: &[char]) -> Vec<Step> {
        let mut prev = id('a');
        ids.iter()
            .map(|c| Step {
                from: std::mem::replace(&mut prev, id(*c)),
                to: id(*c),
                decision: "allowed",
            })
            .collect()
    }

    /// A world where each commit `c` touches the file `c` and whatever `reverts` says it
    /// restores; `denied` commits' own steps are denied; a combined step is allowed unless it
    /// still changes a denied file.
    struct World<'a> {
        denied: &'a [char],
        /// (commit, the file it restores)
        reverts: &'a [(char, char)],
    }

    impl World<'_> {
        fn files(&self, c: char) -> BTreeSet<String> {
            let mut f = BTreeSet::from([c.to_string()]);
            f.extend(self.reverts.iter().filter(|(r, _)| *r == c).map(|(_, x)| x.to_string()));
            f
        }

        /// Files differing between two commits of the line a, b, c, … (reverted ones not).
        fn between(&self, from: char, to: char) -> BTreeSet<String> {
            let mut out = BTreeSet::new();
            for c in (from as u8 + 1..=to as u8).map(char::from) {
                out.insert(c.to_string());
                for (r, x) in self.reverts.iter().filter(|(r, _)| *r == c) {
                    out.remove(&x.to_string());
                    let _ = r;
                }
            }
            out
        }
    }

    impl Judge for World<'_> {
        type J = ();
        type E = ();
        fn judge(&mut self, s: &Step) -> Result<Result<(), Block>, ()> {
            let (from, to) = (s.from.chars().next().unwrap(), s.to.chars().next().unwrap());
            let changed = self.between(from, to);
            let bad = self.denied.iter().any(|d| changed.contains(&d.to_string()))
                && (s.decision == "fixes" || self.denied.contains(&to));
            Ok(if bad {
                Err(Block {
                    commit: Some(s.to.clone()),
                    kind: "denied",
                    reasons: vec![],
                    way_out: String::new(),
                })
            } else {
                Ok(())
            })
        }

        fn reverted(&mut self, items: &BTreeSet<String>, from: &str, to: &str) -> Result<bool, ()> {
            let (from, to) = (from.chars().next().unwrap(), to.chars().next().unwrap());
            let now = self.between(from, to);
            Ok(items.iter().all(|i| !now.contains(i)))
        }

        fn touched(&mut self, from: &str, to: &str) -> Result<BTreeSet<String>, ()> {
            let (from, to) = (from.chars().next().unwrap(), to.chars().next().unwrap());
            Ok(if to as u8 == from as u8 + 1 {
                self.files(to)
            } else {
                self.between(from, to)
            })
        }
    }

    #[test]
    fn apply_stops_at_the_first_commit_that_is_not_allowed_and_never_skips_it() {
        let world = |denied| World { denied, reverts: &[] };
        // c denied; d does not touch c's file, so it fixes nothing
        let w = walk(&steps(&['b', 'c', 'd']), &mut world(&['c'])).unwrap();
        assert_eq!(w.last(), Some(id('b').as_str()));
        assert_eq!(w.block.unwrap().commit, Some(id('c')));
        assert!(w.superseded.is_empty());
        let w = walk(&steps(&['b']), &mut world(&['b'])).unwrap();
        assert_eq!(w.last(), None);
        let w = walk(&steps(&['b', 'c']), &mut world(&[])).unwrap();
        assert_eq!(w.last(), Some(id('c').as_str()));
        assert!(w.block.is_none());
        assert!(walk(&[], &mut world(&[])).unwrap().last().is_none());
    }

    #[test]
    fn a_later_fix_unblocks_as_one_change_over_the_denied_commit() {
        // b ok, c denied, d unrelated, e reverts c, f ok
        let mut w = World {
            denied: &['c'],
            reverts: &[('e', 'c')],
        };
        let w = walk(&steps(&['b', 'c', 'd', 'e', 'f']), &mut w).unwrap();
        let applied: Vec<(String, String, &str)> = w
            .allowed
            .iter()
            .map(|(s, _)| (s.from.clone(), s.to.clone(), s.decision))
            .collect();
        assert_eq!(
            applied,
            vec![
                (id('a'), id('b'), "allowed"),
                (id('c'), id('d'), "allowed"),
                (id('b'), id('e'), "fixes"),
                (id('e'), id('f'), "allowed")
            ]
        );
        let superseded: Vec<_> = w.superseded.iter().map(|b| (b.commit.clone(), b.kind)).collect();
        assert_eq!(superseded, vec![(Some(id('c')), "denied")]);
        assert!(w.block.is_none());
    }

    #[test]
    fn an_unrelated_approved_commit_does_not_launder_a_denied_one() {
        // c denied; d and e are allowed on their own but never touch c's file
        let mut w = World {
            denied: &['c'],
            reverts: &[],
        };
        let w = walk(&steps(&['b', 'c', 'd', 'e']), &mut w).unwrap();
        assert_eq!(w.last(), Some(id('b').as_str()));
        assert_eq!(w.block.map(|b| b.commit), Some(Some(id('c'))));
    }
}
