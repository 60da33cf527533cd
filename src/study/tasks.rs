//! End-task eval sets: JSONL items `{"context", "answer"}` laid out as one token stream
//! whose answer tokens alone are scored (Belenki et al.'s end-task objective: the
//! cross-entropy of the correct answer given a few-shot prompt).
//!
//! Items are joined by end-of-text in file order, so the items before one in the same
//! window act as its few-shot examples. The evaluator scores a stream in windows of
//! `window` tokens whose contexts start at multiples of `window`
//! (`datamix_decoder::EvalConfig` with `stride == window`); an item that would straddle a
//! window boundary is moved to the next boundary (the gap is filled with end-of-text), so
//! every answer token is predicted with its whole item as context.

use std::path::Path;

use datamix_partition::TextTokenizer;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One task item as read from JSONL (other fields, e.g. `choices`, are ignored here).
#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

/// A task set laid out for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStream {
    /// The token stream.
    pub tokens: Vec<u32>,
    /// `scored[t - 1]`: whether target `t` (the log-probability at index `t - 1`) is an
    /// answer token.
    pub scored: Vec<bool>,
    /// Items laid out.
    pub items: usize,
    /// Items whose context was cut on the left to fit one window.
    pub truncated: usize,
}

/// Reads `path` (JSONL items) and lays them out for windows of `window` tokens, stopping
/// before the stream would exceed `max_tokens`.
pub fn load(
    path: &Path,
    tok: &TextTokenizer,
    window: usize,
    max_tokens: usize,
) -> Result<TaskStream> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            Error::Invalid(format!(
                "data.task_sets: {} line {}: {what}",
                path.display(),
                i + 1
            ))
        };
        let item: Item =
            serde_json::from_str(line).map_err(|e| bad(&format!("not a JSON item ({e})")))?;
        let context = item
            .context
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("no `context` (expected a non-empty string)"))?;
        let answer = item
            .answer
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| bad("no `answer` (expected a non-empty string)"))?;
        items.push((tok.encode(&context)?, tok.encode(&answer)?));
    }
    if items.is_empty() {
        return Err(Error::Invalid(format!(
            "data.task_sets: {} holds no items",
            path.display()
        )));
    }
    Ok(layout(&items, tok.eot_id(), window, max_tokens))
}

/// Lays out tokenized `(context, answer)` items (see the module docs).
pub fn layout(
    items: &[(Vec<u32>, Vec<u32>)],
    eot: u32,
    window: usize,
    max_tokens: usize,
) -> TaskStream {
    let mut tokens = vec![eot];
    // `answer[p]`: whether the token at position `p` is an answer token.
    let mut answer_at = vec![false];
    let (mut items_out, mut truncated) = (0, 0);
    for (context, answer) in items {
        // An answer that fills a whole window cannot be scored with any context: skip it.
        if answer.is_empty() || answer.len() + 1 > window {
            continue;
        }
        let room = window - answer.len();
        let ctx = &context[context.len().saturating_sub(room)..];
        let len = ctx.len() + answer.len();
        let mut start = tokens.len();
        // The item's last target must sit in the window whose context starts at or before
        // the item's first token: `(start + len - 2) / window == start / window`.
        if (start + len - 2) / window != start / window {
            start = start.div_ceil(window) * window;
        }
        if start + len + 1 > max_tokens {
            break;
        }
        truncated += usize::from(ctx.len() < context.len());
        tokens.resize(start, eot);
        answer_at.resize(start, false);
        tokens.extend_from_slice(ctx);
        tokens.extend_from_slice(answer);
        tokens.push(eot);
        answer_at.extend(ctx.iter().map(|_| false));
        answer_at.extend(answer.iter().map(|_| true));
        answer_at.push(false);
        items_out += 1;
    }
    TaskStream {
        tokens,
        scored: answer_at.split_off(1),
        items: items_out,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window of target `t` starts its context at `((t - 1) / w) * w` (the evaluator's
    /// non-overlapping windows).
    fn context_start(t: usize, w: usize) -> usize {
        ((t - 1) / w) * w
    }

    #[test]
    fn answers_are_scored_with_their_whole_item_in_context() {
        let eot = 0;
        let items: Vec<(Vec<u32>, Vec<u32>)> = (0..40u32)
            .map(|i| {
                let ctx = (0..(3 + i % 7)).map(|j| 100 + i * 10 + j).collect();
                let ans = (0..(1 + i % 3)).map(|j| 1000 + i * 10 + j).collect();
                (ctx, ans)
            })
            .collect();
        let w = 16;
        let s = layout(&items, eot, w, usize::MAX);
        assert_eq!(s.items, 40);
        assert_eq!(s.scored.len(), s.tokens.len() - 1);
        let answer_tokens: usize = items.iter().map(|(_, a)| a.len()).sum();
        assert_eq!(s.scored.iter().filter(|x| **x).count(), answer_tokens);
        for (idx, &keep) in s.scored.iter().enumerate() {
            let t = idx + 1;
            let tok = s.tokens[t];
            assert_eq!(keep, tok >= 1000, "target {t} token {tok}");
            if keep {
                // The item's first context token is inside this target's window.
                let i = (tok - 1000) / 10;
                let first = s.tokens.iter().position(|&x| x == 100 + i * 10).unwrap();
                assert!(context_start(t, w) <= first, "item {i} straddles a window");
            }
        }
    }

    #[test]
    fn long_contexts_are_cut_on_the_left_and_the_cap_holds() {
        let items = vec![((1..=30).collect::<Vec<u32>>(), vec![500, 501])];
        let s = layout(&items, 0, 8, usize::MAX);
        assert_eq!(s.truncated, 1);
        assert_eq!(&s.tokens[1..9], &[25, 26, 27, 28, 29, 30, 500, 501]);
        assert_eq!(s.scored.iter().filter(|x| **x).count(), 2);
        let many: Vec<_> = (0..100).map(|_| (vec![7, 8, 9], vec![5])).collect();
        let capped = layout(&many, 0, 8, 50);
        assert!(capped.tokens.len() <= 50);
        assert!(capped.items > 5 && capped.items < 100);
    }
}
