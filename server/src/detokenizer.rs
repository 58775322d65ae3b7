//! Streaming text out of a stream of token ids.
//!
//! Two pieces, used together by the step loop for every request:
//!
//! * [`IncrementalDetokenizer`] turns generated tokens into text one token at
//!   a time and only ever emits complete UTF-8 characters. Decoding one token
//!   on its own is wrong in two ways: byte-level and byte-fallback tokenizers
//!   split multi-byte characters across tokens (so a lone token may decode to
//!   U+FFFD), and SentencePiece-style decoders drop or add the leading space
//!   depending on what comes before. So, as HF text-generation-inference and
//!   vLLM do, we keep two offsets into the token list: `prefix_offset` (where
//!   the decoding window starts, for context) and `read_offset` (where the
//!   already-emitted tokens end). Each step decodes `tokens[prefix..]` and
//!   `tokens[prefix..read]`; the difference is new text, emitted only when it
//!   does not end in U+FFFD (an unfinished character). The window starts on a
//!   few prompt tokens so the first output token gets its leading space right.
//! * [`StopMatcher`] finds stop strings in the streamed text. A stop string can
//!   straddle pieces, so it holds back any tail that could still become one
//!   and emits the rest; on a match it emits the text before the stop (never
//!   the stop itself, as OpenAI does).

use std::sync::Arc;

use tokenizers::Tokenizer;

/// How many prompt tokens the first decoding window starts on.
const PROMPT_CONTEXT_TOKENS: usize = 5;
const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Incremental detokenizer for one request's output. See the module docs.
#[derive(Debug)]
pub struct IncrementalDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// Prompt context followed by the output tokens.
    tokens: Vec<u32>,
    /// Start of the decoding window.
    prefix_offset: usize,
    /// End of the tokens whose text has been emitted.
    read_offset: usize,
    /// Everything emitted so far.
    output: String,
}

impl IncrementalDetokenizer {
    /// `prompt_tokens`: the prompt ids, used as left context so the first
    /// output token decodes with the right leading space for SentencePiece /
    /// BPE tokenizers. At most the last few prompt tokens are kept, and
    /// trailing ones are dropped while they end in an unfinished character,
    /// so output bytes are never glued onto a partial prompt character.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        prompt_tokens: &[u32],
        skip_special_tokens: bool,
    ) -> Self {
        let start = prompt_tokens.len().saturating_sub(PROMPT_CONTEXT_TOKENS);
        let mut tokens = prompt_tokens[start..].to_vec();
        while !tokens.is_empty()
            && decode(&tokenizer, &tokens, skip_special_tokens).ends_with(REPLACEMENT)
        {
            tokens.pop();
        }
        let read_offset = tokens.len();
        Self {
            tokenizer,
            skip_special_tokens,
            tokens,
            prefix_offset: 0,
            read_offset,
            output: String::new(),
        }
    }

    /// Push one generated token; returns the newly completed text (empty when
    /// the token ends mid UTF-8 character, e.g. a byte-level piece of a
    /// multi-byte character, or decodes to nothing, e.g. a skipped special
    /// token).
    pub fn push(&mut self, token: u32) -> String {
        self.tokens.push(token);
        self.step(false)
    }

    /// All text emitted so far.
    pub fn text(&self) -> &str {
        &self.output
    }

    /// Flush at the end: any unfinished trailing bytes are emitted lossily
    /// (as U+FFFD), once; later calls return an empty string.
    pub fn finish(&mut self) -> String {
        self.step(true)
    }

    fn step(&mut self, flush: bool) -> String {
        if self.read_offset == self.tokens.len() {
            return String::new();
        }
        let prefix_text = self.decode(self.prefix_offset, self.read_offset);
        let new_text = self.decode(self.prefix_offset, self.tokens.len());
        if !flush && (new_text.len() <= prefix_text.len() || new_text.ends_with(REPLACEMENT)) {
            return String::new();
        }
        let piece = match new_text.strip_prefix(prefix_text.as_str()) {
            Some(piece) => piece,
            // A decoder whose output is not prefix-stable (e.g. byte-fallback
            // runs rewritten as a whole): best effort, cut at the old length.
            None => &new_text[ceil_char_boundary(&new_text, prefix_text.len())..],
        }
        .to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        self.output.push_str(&piece);
        piece
    }

    fn decode(&self, from: usize, to: usize) -> String {
        decode(
            &self.tokenizer,
            &self.tokens[from..to],
            self.skip_special_tokens,
        )
    }
}

/// Decode, treating a decoder error as no text: ids the tokenizer does not
/// know are already dropped by `decode`, so errors are not expected here.
fn decode(tokenizer: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> String {
    tokenizer
        .decode(ids, skip_special_tokens)
        .unwrap_or_default()
}

/// The smallest char boundary of `s` at or after `i` (clamped to `s.len()`).
fn ceil_char_boundary(s: &str, i: usize) -> usize {
    (i..s.len())
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(s.len())
}

/// Stop-string matcher over streamed text: holds back the tail that could
/// still be the start of a stop string.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop strings with their index in the caller's list.
    stops: Vec<(usize, String)>,
    /// Longest stop, in bytes.
    max_len: usize,
    /// Text received but not yet emitted.
    pending: String,
    /// A stop matched; everything after it is dropped.
    matched: bool,
}

impl StopMatcher {
    /// A matcher for these stop strings. Empty strings never match.
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<(usize, String)> = stops
            .into_iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .collect();
        let max_len = stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        Self {
            stops,
            max_len,
            pending: String::new(),
            matched: false,
        }
    }

    /// Feed newly decoded text; returns (text safe to emit now, index of the
    /// matched stop). On a match the returned text is everything before the
    /// stop string, the stop itself is not emitted, and the caller should
    /// finish the request; later pushes return nothing. If several stops
    /// match, the one that ends first wins (ties: the one that starts first,
    /// then the lowest index), so the result does not depend on how the text
    /// was split into pieces.
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        if self.matched {
            return (String::new(), None);
        }
        self.pending.push_str(text);
        // Everything before `pending` was emitted only because no stop could
        // start there, so a match lies entirely inside `pending`.
        // The stop that completes first in the stream wins, whatever the
        // pieces were (ties: the one that starts first, then the lowest index).
        let best = self
            .stops
            .iter()
            .filter_map(|(idx, stop)| {
                self.pending
                    .find(stop.as_str())
                    .map(|pos| (pos + stop.len(), pos, *idx))
            })
            .min();
        if let Some((_, pos, idx)) = best {
            self.matched = true;
            self.pending.truncate(pos);
            return (std::mem::take(&mut self.pending), Some(idx));
        }
        let hold = self.hold_from();
        let rest = self.pending.split_off(hold);
        (std::mem::replace(&mut self.pending, rest), None)
    }

    /// At the end of generation (no stop matched): the held-back tail.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Where the held-back tail starts: the first char boundary whose suffix
    /// is a proper prefix of some stop. Only the last `max_len - 1` bytes can
    /// qualify; a full stop would have matched.
    fn hold_from(&self) -> usize {
        let len = self.pending.len();
        let lo = len.saturating_sub(self.max_len.saturating_sub(1));
        (lo..len)
            .filter(|&i| self.pending.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.pending.as_bytes()[i..];
                self.stops
                    .iter()
                    .any(|(_, s)| s.as_bytes().starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokenizers::decoders::byte_fallback::ByteFallback;
    use tokenizers::decoders::sequence::Sequence;
    use tokenizers::decoders::DecoderWrapper;
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
    use tokenizers::AddedToken;

    /// GPT-2's byte -> printable char table, as used by byte-level BPE.
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable(b) {
            return char::from(b);
        }
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }

    fn byte_level_piece(bytes: &[u8]) -> String {
        bytes.iter().map(|&b| byte_char(b)).collect()
    }

    /// Words with multi-byte characters, and pieces that cut characters.
    const WORDS: &[&[u8]] = &[
        b" the",
        b"ll",
        b" hello",
        "é".as_bytes(),
        "中".as_bytes(),
        "文".as_bytes(),
        " 中文".as_bytes(),
        "😀".as_bytes(),
        "é中".as_bytes(),
        b"\xF0\x9F",     // first half of 😀
        b"\x98\x80 a",   // second half of 😀, then " a"
        b"\xE4\xB8",     // first two bytes of 中
        b"\xAD\xE6\x96", // last byte of 中, first two of 文
    ];

    /// Byte-level BPE: ids 0..256 are the single bytes, then `WORDS`, then
    /// one special token. Decoding needs no merges.
    fn byte_level_tokenizer() -> Arc<Tokenizer> {
        let bytes = (0..=255u8).map(|b| (byte_level_piece(&[b]), u32::from(b)));
        let words = WORDS.iter().enumerate();
        let vocab: Vocab = bytes
            .chain(words.map(|(i, w)| (byte_level_piece(w), 256 + i as u32)))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(ByteLevel::default()));
        tok.with_decoder(Some(ByteLevel::default()));
        tok.add_special_tokens([AddedToken::from("<|eot|>", true)])
            .unwrap();
        Arc::new(tok)
    }

    fn vocab_size() -> u32 {
        256 + WORDS.len() as u32 + 1
    }

    fn stream(
        tok: &Arc<Tokenizer>,
        prompt: &[u32],
        out: &[u32],
        skip: bool,
    ) -> (Vec<String>, String) {
        let mut d = IncrementalDetokenizer::new(tok.clone(), prompt, skip);
        let pieces: Vec<String> = out.iter().map(|&t| d.push(t)).collect();
        let tail = d.finish();
        assert_eq!(d.finish(), "", "finish emits once");
        let all = pieces.concat() + &tail;
        assert_eq!(d.text(), all);
        (pieces, tail)
    }

    #[test]
    fn byte_tokens_of_one_char_emit_only_when_complete() {
        let tok = byte_level_tokenizer();
        let out: Vec<u32> = "a😀b".bytes().map(u32::from).collect();
        let (pieces, tail) = stream(&tok, &[], &out, true);
        assert_eq!(pieces, ["a", "", "", "", "😀", "b"]);
        assert_eq!(tail, "");
    }

    #[test]
    fn merged_tokens_that_split_chars() {
        let tok = byte_level_tokenizer();
        let id = |w: &[u8]| 256 + WORDS.iter().position(|x| *x == w).unwrap() as u32;
        let out = [
            id(b"\xF0\x9F"),
            id(b"\x98\x80 a"),
            id(b"\xE4\xB8"),
            id(b"\xAD\xE6\x96"),
            u32::from(0x87u8),
            id(b" the"),
        ];
        let (pieces, tail) = stream(&tok, &[], &out, true);
        // The third token completes 中 but leaves 文 unfinished: held back.
        assert_eq!(pieces, ["", "😀 a", "", "", "中文", " the"]);
        assert_eq!(tail, "");
    }

    #[test]
    fn unfinished_tail_is_flushed_lossily_once() {
        let tok = byte_level_tokenizer();
        let mut d = IncrementalDetokenizer::new(tok, &[], true);
        assert_eq!(d.push(u32::from(b'x')), "x");
        assert_eq!(d.push(0xE4), "");
        assert_eq!(d.push(0xB8), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.finish(), "");
        assert_eq!(d.text(), "x\u{FFFD}");
    }

    #[test]
    fn special_tokens_are_skipped_or_kept() {
        let tok = byte_level_tokenizer();
        let eot = vocab_size() - 1;
        let out = [u32::from(b'h'), eot, u32::from(b'i')];
        let (pieces, _) = stream(&tok, &[], &out, true);
        assert_eq!(pieces, ["h", "", "i"]);
        let (pieces, _) = stream(&tok, &[], &out, false);
        assert_eq!(pieces, ["h", "<|eot|>", "i"]);
    }

    #[test]
    fn prompt_ending_mid_char_is_not_used_as_context() {
        let tok = byte_level_tokenizer();
        // The prompt ends with the first two bytes of 中; the output's
        // continuation byte must not complete it.
        let prompt = [u32::from(b'a'), 0xE4, 0xB8];
        let (pieces, tail) = stream(&tok, &prompt, &[0xAD, u32::from(b'b')], true);
        assert_eq!(pieces.concat() + &tail, "\u{FFFD}b");
    }

    /// SentencePiece-style: the Metaspace decoder drops the leading space of
    /// the first token it sees, so the prompt context decides whether the
    /// first output token starts with a space. Byte-fallback pieces of a
    /// multi-byte char are held back until it is complete.
    #[test]
    fn sentencepiece_leading_space_and_byte_fallback() {
        let pieces = [
            "▁Hello", "▁world", "!", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>",
        ];
        let vocab: Vocab = (0..).zip(pieces).map(|(i, w)| (w.to_string(), i)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .byte_fallback(true)
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(bpe);
        tok.with_decoder(Some(Sequence::new(vec![
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Metaspace(Metaspace::new('▁', PrependScheme::Always, true)),
        ])));
        let tok = Arc::new(tok);
        let out = [1, 3, 4, 5, 6, 2];
        let (with_ctx, _) = stream(&tok, &[0], &out, true);
        assert_eq!(with_ctx, [" world", "", "", "", "😀", "!"]);
        let (no_ctx, _) = stream(&tok, &[], &out, true);
        assert_eq!(no_ctx[0], "world");
        assert_eq!(no_ctx.concat(), tok.decode(&out, true).unwrap());
    }

    proptest! {
        /// Streamed pieces + finish() == decoding the whole output at once,
        /// whatever the prompt and output ids. Output is built from chunks:
        /// any id, a raw high byte, a merged piece, or one random char as
        /// one byte token per UTF-8 byte (so chars split across tokens).
        #[test]
        fn prop_incremental_equals_full_decode(
            prompt in proptest::collection::vec(0..vocab_size(), 0..8),
            chunks in proptest::collection::vec(
                prop_oneof![
                    (0..vocab_size()).prop_map(|t| vec![t]),
                    (0x80u32..0x100).prop_map(|t| vec![t]),
                    (256..vocab_size()).prop_map(|t| vec![t]),
                    any::<char>().prop_map(|c| c.to_string().bytes().map(u32::from).collect()),
                ],
                0..30,
            ),
            skip: bool,
        ) {
            let out = chunks.concat();
            let tok = byte_level_tokenizer();
            let (pieces, tail) = stream(&tok, &prompt, &out, skip);
            let want = tok.decode(&out, skip).unwrap();
            prop_assert_eq!(pieces.concat() + &tail, want);
            // A streamed piece never ends in an unfinished character.
            for p in &pieces {
                prop_assert!(!p.ends_with(REPLACEMENT), "piece {:?}", p);
            }
        }
    }

    fn run_stops(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<usize>, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut emitted = Vec::new();
        for p in pieces {
            let (text, hit) = m.push(p);
            emitted.push(text);
            if hit.is_some() {
                return (emitted, hit, String::new());
            }
        }
        let tail = m.flush();
        (emitted, None, tail)
    }

    #[test]
    fn stop_across_pieces_is_not_emitted() {
        let (emitted, hit, _) = run_stops(&["STOP"], &["Hello ST", "O", "P and more"]);
        assert_eq!(emitted, ["Hello ", "", ""]);
        assert_eq!(hit, Some(0));
    }

    #[test]
    fn false_start_is_released() {
        let (emitted, hit, tail) = run_stops(&["\n\n"], &["a\n", "b", "c\n"]);
        assert_eq!(emitted, ["a", "\nb", "c"]);
        assert_eq!((hit, tail.as_str()), (None, "\n"));
    }

    #[test]
    fn no_stops_emits_everything_at_once() {
        let (emitted, hit, tail) = run_stops(&[], &["abc", "dé"]);
        assert_eq!(emitted, ["abc", "dé"]);
        assert_eq!((hit, tail.as_str()), (None, ""));
        let (emitted, _, _) = run_stops(&["", "xyz"], &["abc"]);
        assert_eq!(emitted, ["abc"]);
    }

    #[test]
    fn earliest_stop_wins_and_multibyte_is_held_whole() {
        let (emitted, hit, _) = run_stops(&["world", "o w"], &["hello world"]);
        assert_eq!((emitted.concat(), hit), ("hell".to_string(), Some(1)));
        // "中文" starts with the 3 bytes of 中: hold back the whole char.
        let mut m = StopMatcher::new(vec!["中文".into()]);
        assert_eq!(m.push("a中"), ("a".to_string(), None));
        assert_eq!(m.push("x"), ("中x".to_string(), None));
        assert_eq!(m.push("中"), (String::new(), None));
        assert_eq!(m.push("文!"), (String::new(), Some(0)));
        assert_eq!(m.push("more"), (String::new(), None));
    }

    /// Text split at char boundaries into pieces.
    fn split_pieces(text: &str, cuts: &[usize]) -> Vec<String> {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        at.extend([0, text.len()]);
        at.sort_unstable();
        at.dedup();
        at.windows(2)
            .map(|w| text[w[0]..w[1]].to_string())
            .collect()
    }

    fn small_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec!["a", "b", "é", "中", "😀", "\n"]),
            0..max,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        /// Emitted text == the text up to the stop that completes first (or
        /// all of it), and the reported stop is that one.
        #[test]
        fn prop_stop_matcher_equals_naive_search(
            text in small_text(30),
            stops in proptest::collection::vec(small_text(4), 0..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let pieces = split_pieces(&text, &cuts);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let (emitted, hit, tail) = run_stops(&stop_refs, &refs);
            let first = stops
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .filter_map(|(i, s)| text.find(s.as_str()).map(|p| (p + s.len(), p, i)))
                .min();
            match first {
                Some((_, pos, idx)) => {
                    prop_assert_eq!(emitted.concat(), &text[..pos]);
                    prop_assert_eq!(hit, Some(idx));
                }
                None => {
                    prop_assert_eq!(emitted.concat() + &tail, text);
                    prop_assert_eq!(hit, None);
                }
            }
        }
    }
}
