//! The framer's fast path for server bytes that nobody needs to look at: whole messages passed on
//! as one run instead of frame by frame.
//!
//! Most of a busy mailbox's server traffic is `* n FETCH|EXISTS|EXPUNGE ...` and tagged
//! answers, which the session core forwards unchanged unless a stage subscribed to them.
//! [`Framer::pass_run`] frames such messages exactly as a series of [`Framer::next`] calls
//! would (the same line ends, the same literal announcements, the same state afterwards) but
//! without building a [`Frame`] per line and literal chunk, and hands back one length for the
//! caller to forward.
//!
//! [`Frame`]: super::Frame

use crate::proto::line_end::LineEnds;
use crate::proto::message::is_numbered;

use super::{CONTINUATION_LINE, Direction, Framer, MESSAGE_START, State, take_up_to};

/// What a run does with a message, judged by its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStep {
    /// Take the message and go on.
    Pass,
    /// Leave the message (and everything after it) to [`Framer::next`].
    Stop,
    /// Take the message, then stop: the caller acts on it before the next one is judged (a
    /// tagged answer completes a command, which may change what the stages listen to).
    Last,
}

/// Asks `judge`, out of line: the run's loop keeps its few values in registers rather than
/// make room for everything a judge captures (~45 instructions of spills and reloads a line).
#[inline(never)]
fn ask<'a>(judge: &mut impl FnMut(&'a [u8]) -> RunStep, first_line: &'a [u8]) -> RunStep {
    judge(first_line)
}

/// Whether the line `buf[start..=lf]` (`buf[lf]` is its LF) ends in `}` before its line ending:
/// only such a line can announce a literal. Most lines end in `)` or text.
#[inline(always)]
fn ends_in_brace(buf: &[u8], start: usize, lf: usize) -> bool {
    let end = if lf > start && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    end > start && buf[end - 1] == b'}'
}

impl From<bool> for RunStep {
    /// `true` passes, `false` stops.
    fn from(pass: bool) -> Self {
        if pass { RunStep::Pass } else { RunStep::Stop }
    }
}

/// What a run took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// How many bytes, from the start of the buffer: whole messages, the last one perhaps in
    /// part (as far as it had arrived).
    pub len: usize,
    /// Whether the run ended with a message judged [`RunStep::Last`], which it took.
    pub last: bool,
}

impl Framer {
    /// Frames whole messages from the start of `buf` for as long as `judge` takes each one's
    /// first line (with its line ending), and returns how many bytes that was ([`Ran`]): the
    /// caller passes them on unchanged. With `numbered_unasked`, a message whose first line
    /// starts `* ` and a digit ([`is_numbered`]) is taken without asking `judge` (the core says
    /// so when no stage listens to those kinds). A message that arrived in part is taken as far as it is
    /// there when its first line was taken (a literal's bytes, whole continuation lines).
    ///
    /// Stops, leaving the rest to [`Framer::next`], at the first line `judge` stops at, after
    /// a message it takes as the [last](RunStep::Last), at a line whose end has not arrived,
    /// and at anything `next` treats specially (a literal over the limit, an announcement that
    /// does not fit 64 bits). Afterwards the framer is in exactly the state the same bytes
    /// framed by `next` would have left it in. Server side only: client lines need the lexer;
    /// on the client side it takes nothing.
    pub fn pass_run<'a>(
        &mut self,
        buf: &'a [u8],
        numbered_unasked: bool,
        mut judge: impl FnMut(&'a [u8]) -> RunStep,
    ) -> Ran {
        let ran = |len, last| Ran { len, last };
        if self.direction != Direction::ServerToClient {
            return ran(0, false);
        }
        let mut pos = 0;
        // Whether the line at `pos` starts a message; the state is written back once, where the
        // run stops (kept in a register, not stored per line).
        let mut first = match self.state {
            State::Literal { remaining } => {
                let take = take_up_to(remaining, buf.len());
                if (take as u64) < remaining {
                    self.state = State::Literal {
                        remaining: remaining - take as u64,
                    };
                    return ran(take, false);
                }
                pos = take;
                false
            }
            State::Line {
                scanned: 0,
                first,
                started: false,
            } => first,
            _ => return ran(0, false),
        };
        let mut ends = LineEnds::new(buf);
        // Whether the message being taken is the run's last.
        let mut last = false;
        while let Some(lf) = ends.find(pos) {
            if first && !(numbered_unasked && is_numbered(&buf[pos..])) {
                match ask(&mut judge, &buf[pos..=lf]) {
                    RunStep::Pass => {}
                    RunStep::Stop => break,
                    RunStep::Last => last = true,
                }
            }
            // A line with no `}` before its ending announces nothing, and needs no further
            // look (as `announced` would find).
            let literal = if !ends_in_brace(buf, pos, lf) {
                None
            } else if let Ok(literal) = self.server_literal(&buf[pos..=lf], first, false) {
                literal
            } else {
                // Left to `next`, this line too: a last message judged at it was not taken.
                last &= !first;
                break;
            };
            let Some(literal) = literal else {
                pos = lf + 1;
                first = true;
                if last {
                    break;
                }
                continue;
            };
            if literal.len > self.limits.max_literal {
                last &= !first;
                break;
            }
            pos = lf + 1;
            let take = take_up_to(literal.len, buf.len() - pos);
            pos += take;
            if (take as u64) < literal.len {
                self.state = State::Literal {
                    remaining: literal.len - take as u64,
                };
                return ran(pos, last);
            }
            first = false;
        }
        self.state = if first {
            MESSAGE_START
        } else {
            CONTINUATION_LINE
        };
        ran(pos, last)
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::framer::{Direction, Framer, Limits, RunStep};
    use crate::proto::message::is_numbered;
    use crate::proto::replay::{replay, replay_runs};

    /// `* n ...` lines, as the session core passes them when no stage subscribed to them.
    fn numbered(line: &[u8]) -> RunStep {
        is_numbered(line).into()
    }

    /// As the session core judges: numbered lines pass, a tagged line (here: one starting with
    /// `a`) is the run's last, anything else stops it.
    fn with_tagged(line: &[u8]) -> RunStep {
        match line {
            [b'a', ..] => RunStep::Last,
            _ => numbered(line),
        }
    }

    /// As the session core judges with no stage listening to numbered messages: those pass
    /// unasked (asking about one fails the test), a tagged line is the run's last, anything
    /// else stops it.
    fn never_numbered(line: &[u8]) -> RunStep {
        assert!(!is_numbered(line), "a numbered line was judged");
        with_tagged(line)
    }

    /// A judge of first lines.
    type JudgeFn = fn(&[u8]) -> RunStep;

    /// The judges the tests run with, and whether numbered messages pass unasked.
    const JUDGES: [(JudgeFn, bool); 4] = [
        (numbered, false),
        (with_tagged, false),
        (never_numbered, true),
        (numbered, true),
    ];

    fn small() -> Limits {
        Limits {
            max_line: 80,
            max_literal: 300,
        }
    }

    /// Runs and `next` frame `input` alike however it is cut in two (the replay checks every
    /// run against `next`).
    fn same_at_every_split(input: &[u8], limits: Limits) {
        let dir = Direction::ServerToClient;
        let (whole, err) = replay(&mut Framer::new(dir, limits), &[input], false);
        for cut in 0..=input.len() {
            let chunks = [&input[..cut], &input[cut..]];
            for (judge, unasked) in JUDGES {
                let mut framer = Framer::new(dir, limits);
                let (events, err2) = replay_runs(&mut framer, &chunks, false, unasked, judge);
                assert_eq!(events, whole, "cut at {cut}");
                assert_eq!(err, err2, "cut at {cut}");
            }
        }
    }

    #[test]
    fn fetch_messages_with_literals_run_like_next() {
        let input = b"* 1 FETCH (UID 7 BODY[HEADER] {12}\r\nSubject: x\r\n FLAGS (\\Seen))\r\n\
* 2 EXISTS\r\n* 3 FETCH (BODY[] {0}\r\n)\r\na1 OK [READ-WRITE] done {5}\r\n\
* 4 FETCH (BODY[] ~{3}\r\n\0\r\n BODY[1] {2}\r\nab)\r\n* OK [ALERT] {4}\r\n+ go {9}\r\n";
        same_at_every_split(input, Limits::default());
    }

    #[test]
    fn runs_stop_where_next_does_something_else() {
        // A long line streamed in parts, a literal over the limit, an announcement too large.
        let long = [
            b"* 1 FETCH (X ".as_slice(),
            &[b'a'; 200],
            b" {3}\r\nabc)\r\n",
        ]
        .concat();
        same_at_every_split(&long, small());
        same_at_every_split(b"* 1 FETCH (BODY[] {301}\r\nxyz", small());
        same_at_every_split(
            b"* 1 FETCH (BODY[] {99999999999999999999}\r\n* 2 EXISTS\r\n",
            small(),
        );
    }

    #[test]
    fn a_refused_first_line_is_left_to_next() {
        let mut f = Framer::new(Direction::ServerToClient, Limits::default());
        let input = b"* 1 EXISTS\r\n* 2 FETCH (BODY[] {3}\r\nab";
        assert_eq!(f.pass_run(input, false, numbered).len, input.len());
        assert_eq!(f.literal_remaining(), 1);
        let mut f = Framer::new(Direction::ServerToClient, Limits::default());
        let ran = f.pass_run(b"* 1 EXISTS\r\na OK x\r\n* 2 EXISTS\r\n", false, numbered);
        assert_eq!((ran.len, ran.last), (12, false));
        assert!(f.at_message_boundary());
        let mut f = Framer::new(Direction::ClientToServer, Limits::default());
        assert_eq!(f.pass_run(b"* 1 EXISTS\r\n", false, numbered).len, 0);
    }

    #[test]
    fn numbered_messages_pass_unasked_when_the_judge_says_so() {
        let input = b"* 1 EXISTS\r\n* 2 FETCH (BODY[] {3}\r\nabc)\r\n* OK x\r\n";
        let mut asked = Vec::new();
        let mut f = Framer::new(Direction::ServerToClient, Limits::default());
        let judge = |line: &[u8]| {
            asked.push(line.to_vec());
            RunStep::Stop
        };
        assert_eq!(f.pass_run(input, true, judge).len, input.len() - 8);
        assert_eq!(asked, [b"* OK x\r\n".to_vec()]);
        // Not unasked: the first line is asked about, and refused.
        let mut f = Framer::new(Direction::ServerToClient, Limits::default());
        assert_eq!(f.pass_run(input, false, |_| RunStep::Stop).len, 0);
    }

    #[test]
    fn a_last_message_ends_the_run_after_it() {
        let input = b"* 1 EXISTS\r\na OK x\r\n* 2 EXISTS\r\n";
        let mut f = Framer::new(Direction::ServerToClient, Limits::default());
        let ran = f.pass_run(input, false, with_tagged);
        assert_eq!((ran.len, ran.last), (20, true));
        assert!(f.at_message_boundary());
        // A last message announcing a literal is taken with it; one whose announcement `next`
        // must judge (over the limit) is not taken at all.
        let mut f = Framer::new(Direction::ServerToClient, small());
        let ran = f.pass_run(b"a1 X {2}\r\nxy\r\n* 3 EXISTS\r\n", false, with_tagged);
        assert_eq!((ran.len, ran.last), (14, true));
        let mut f = Framer::new(Direction::ServerToClient, small());
        let ran = f.pass_run(b"* 1 EXISTS\r\na1 X {301}\r\n", false, with_tagged);
        assert_eq!((ran.len, ran.last), (12, false));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Server streams built from the pieces that matter (numbered and tagged lines, literal
        /// announcements, status text ending in `{n}`), cut anywhere: runs frame as `next`.
        #[test]
        fn runs_frame_as_next(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                b"* 1 FETCH (BODY[] {3}\r\n".as_slice(), b"abc", b" X {0}\r\n", b")\r\n",
                b"* 22 EXISTS\r\n", b"a OK done {2}\r\n", b"* OK {1}\r\n", b"+ {3}\r\n",
                b"* LIST () \"/\" {1}\r\n", b"x", b"\r\n", b"* 3 X ~{2}\r\n", b"{", b"}",
                b"* 4 FETCH (X {400}\r\n", b"0", b"a1 X {2}\r\n", b"a2 OK y\r\n",
                b"a3 Z {500}\r\n",
            ]), 0..24),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let input = pieces.concat();
            let dir = Direction::ServerToClient;
            let (whole, err) = replay(&mut Framer::new(dir, small()), &[&input], false);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                chunks.push(&input[at..c]);
                at = c;
            }
            for (judge, unasked) in JUDGES {
                let mut framer = Framer::new(dir, small());
                let (events, err2) = replay_runs(&mut framer, &chunks, false, unasked, judge);
                proptest::prop_assert_eq!(&events, &whole);
                proptest::prop_assert_eq!(&err, &err2);
            }
        }
    }
}
