use super::*;
use proptest::prelude::*;

/// The plain model: what `RunVec` must behave as.
#[derive(Debug, Default)]
struct Model(Vec<u32>);

#[derive(Debug, Clone)]
enum Op {
    Resize(usize),
    Truncate(usize),
    Set(usize, u32),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..40).prop_map(Op::Resize),
        (0usize..40).prop_map(Op::Truncate),
        (0usize..40, 0u32..60).prop_map(|(i, u)| Op::Set(i, u)),
        (0usize..40).prop_map(Op::Remove),
    ]
}

fn check(v: &RunVec, m: &Model) {
    assert_eq!(v.len(), m.0.len());
    // Kept in the fewest runs: none empty, none that the next one continues.
    assert!(
        (0..v.runs.len()).all(|r| v.run_len(r) > 0 && v.runs[r].end > v.start(r)),
        "an empty run in {v:?}"
    );
    assert!(
        (1..v.runs.len()).all(|r| !v.joins(r - 1)),
        "runs left unjoined in {v:?}"
    );
    assert_eq!(v.spans().map(|(_, l)| l as usize).sum::<usize>(), v.len());
    // The index (the ends) agrees with a walk over the run lengths.
    for i in 0..m.0.len() + 2 {
        let mut base = 0usize;
        let mut walk = None;
        for (r, (_, len)) in v.spans().enumerate() {
            if i < base + len as usize {
                walk = Some((r, (i - base) as u32));
                break;
            }
            base += len as usize;
        }
        assert_eq!(v.locate(i), walk, "locate({i}) of {v:?}");
    }
    for i in 0..m.0.len() + 2 {
        assert_eq!(
            v.get(i),
            m.0.get(i).copied().unwrap_or(0),
            "get({i}) of {v:?} vs {m:?}"
        );
        let before = m.0[..i.min(m.0.len())]
            .iter()
            .rev()
            .find(|&&u| u != 0)
            .copied();
        assert_eq!(v.known_before(i), before, "known_before({i})");
        let after =
            m.0.get(i + 1..)
                .and_then(|s| s.iter().find(|&&u| u != 0).copied());
        assert_eq!(
            v.known_after(i),
            after,
            "known_after({i}) of {v:?} vs {m:?}"
        );
    }
    for uid in 0..62 {
        let pos = if uid == 0 {
            None
        } else {
            m.0.iter().position(|&u| u == uid)
        };
        assert_eq!(v.position(uid), pos, "position({uid}) of {v:?} vs {m:?}");
        let below = m.0.iter().rposition(|&u| u != 0 && u < uid);
        assert_eq!(
            v.last_below(uid),
            below,
            "last_below({uid}) of {v:?} vs {m:?}"
        );
        let above = m.0.iter().position(|&u| u > uid);
        assert_eq!(
            v.first_above(uid),
            above,
            "first_above({uid}) of {v:?} vs {m:?}"
        );
    }
    let last = m.0.iter().rposition(|&u| u != 0).map(|i| (i, m.0[i]));
    assert_eq!(v.last_known(), last);
    assert_eq!(v.has_unknown(), m.0.contains(&0));
    let known: Vec<u32> = m.0.iter().copied().filter(|&u| u != 0).collect();
    assert_eq!(v.known().collect::<Vec<_>>(), known);
    let all: Vec<usize> = (0..m.0.len() + 2).collect();
    let at: Vec<u32> = all
        .iter()
        .map(|&i| m.0.get(i).copied().unwrap_or(0))
        .collect();
    assert_eq!(v.at_sorted(&all), at);
}

proptest! {
    #[test]
    fn behaves_as_a_vec(ops in proptest::collection::vec(op(), 0..60)) {
        let (mut v, mut m) = (RunVec::default(), Model::default());
        for op in ops {
            match op {
                Op::Resize(n) => {
                    v.resize(n);
                    m.0.resize(n, 0);
                }
                Op::Truncate(n) => {
                    v.truncate(n);
                    m.0.truncate(n);
                }
                Op::Set(i, u) => {
                    v.set(i, u);
                    if let Some(x) = m.0.get_mut(i) {
                        *x = u;
                    }
                }
                Op::Remove(i) => {
                    v.remove(i);
                    if i < m.0.len() {
                        m.0.remove(i);
                    }
                }
            }
            check(&v, &m);
        }
    }
}

#[test]
fn a_mailbox_with_a_few_holes_is_a_few_runs() {
    let mut v = RunVec::default();
    v.resize(10_000);
    for i in 0..10_000 {
        // UIDs 1..=10,300 with every 34th missing: 300 holes.
        let uid = i as u32 + 1 + i as u32 / 33;
        v.set(i, uid);
    }
    assert!(v.runs() <= 304, "{} runs", v.runs());
    assert_eq!(v.get(0), 1);
    assert_eq!(v.get(9_999), 10_000 + 9_999 / 33);
}

#[test]
fn uids_at_the_top_of_the_range() {
    let mut v = RunVec::default();
    v.resize(3);
    v.set(1, u32::MAX - 1);
    v.set(2, u32::MAX);
    assert_eq!(v.last_known(), Some((2, u32::MAX)));
    assert_eq!(v.position(u32::MAX), Some(2));
    assert_eq!(v.known().collect::<Vec<_>>(), [u32::MAX - 1, u32::MAX]);
    assert_eq!(v.first_above(u32::MAX - 1), Some(2));
    v.remove(2);
    v.remove(1);
    assert_eq!(v.len(), 1);
    assert_eq!(v.known_before(5), None);
}
