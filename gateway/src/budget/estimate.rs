//! What a request will probably cost, before it is sent: a token estimate and a price.
//!
//! The input estimate is `ceil(bytes / 4)` of the prompt text plus a fixed overhead per message
//! (role and separators, [`MESSAGE_OVERHEAD_TOKENS`]). Four bytes per token is the usual figure
//! for English with the GPT-4/4o tokenizers: on English prose and chat it is typically within
//! ±25% of the real count; it **under**-estimates code and non-Latin scripts (CJK text takes
//! three UTF-8 bytes per character and often one or more tokens per character, so up to ~3×
//! low) and over-estimates long runs of whitespace. It is deliberately not a tokenizer: it costs
//! nanoseconds, and the reservation is corrected to the provider's reported usage on settle, so
//! the error only affects how close to the limit a burst of concurrent requests can get.
//!
//! Money is integer micro-dollars (1 USD = 1,000,000 µ$). Prices are kept as nano-dollars per
//! token (= USD per million tokens × 1000), so a price is exact to $0.001 per million tokens and
//! every cost is rounded **up** to the next micro-dollar: a budget never under-counts.

/// Tokens added per chat message for the role and separators.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: f64 = 1_000_000.0;

/// Estimated input tokens of a request whose message texts total `text_bytes` bytes over
/// `messages` messages.
pub fn estimate_input_tokens(text_bytes: usize, messages: usize) -> u64 {
    let bytes = u64::try_from(text_bytes).unwrap_or(u64::MAX);
    let msgs = u64::try_from(messages).unwrap_or(u64::MAX);
    bytes
        .div_ceil(4)
        .saturating_add(msgs.saturating_mul(MESSAGE_OVERHEAD_TOKENS))
}

/// Estimated input tokens of a list of message texts.
pub fn estimate_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let (bytes, n) = texts.into_iter().fold((0usize, 0usize), |(b, n), t| {
        (b.saturating_add(t.len()), n + 1)
    });
    estimate_input_tokens(bytes, n)
}

/// A model's price, in nano-dollars per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input_nanos_per_token: u64,
    pub output_nanos_per_token: u64,
}

impl Price {
    /// From the pack's USD per million tokens. A missing or negative price counts as zero
    /// (pack validation refuses USD limits on unpriced models).
    pub fn from_usd_per_mtok(input: Option<f64>, output: Option<f64>) -> Self {
        Self {
            input_nanos_per_token: usd_per_mtok_to_nanos(input),
            output_nanos_per_token: usd_per_mtok_to_nanos(output),
        }
    }

    /// Cost of a request in micro-dollars, rounded up.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let nanos = u128::from(input_tokens) * u128::from(self.input_nanos_per_token)
            + u128::from(output_tokens) * u128::from(self.output_nanos_per_token);
        u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

fn usd_per_mtok_to_nanos(usd: Option<f64>) -> u64 {
    match usd {
        // Round to the nearest nano-dollar: 2.5 $/Mtok is exactly 2500 n$/token.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked finite and positive; `as` saturates at u64::MAX"
        )]
        Some(p) if p.is_finite() && p > 0.0 => (p * 1000.0).round() as u64,
        _ => 0,
    }
}

/// A USD amount from the pack as micro-dollars (rounded down, so a limit is never raised).
pub fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked finite and positive; `as` saturates at u64::MAX"
        )]
        let m = (usd * MICROS_PER_USD).floor() as u64;
        m
    } else {
        0
    }
}

/// Micro-dollars as USD, for headers and metrics.
#[expect(
    clippy::cast_precision_loss,
    reason = "display only; exact below 2^53 µ$ (9 billion USD)"
)]
pub fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bytes_per_token_plus_message_overhead() {
        assert_eq!(estimate_input_tokens(0, 0), 0);
        assert_eq!(estimate_input_tokens(1, 1), 1 + MESSAGE_OVERHEAD_TOKENS);
        assert_eq!(
            estimate_input_tokens(400, 2),
            100 + 2 * MESSAGE_OVERHEAD_TOKENS
        );
        assert_eq!(estimate_texts(["abcd", "abcde"]), 1 + 2 + 8);
    }

    #[test]
    fn estimate_is_close_on_english_prose() {
        // "How do I reset my password?" is 7 tokens with the GPT-4o tokenizer.
        let est = estimate_input_tokens("How do I reset my password?".len(), 0);
        assert!((6..=9).contains(&est), "{est}");
    }

    #[test]
    fn cost_is_exact_for_pack_prices_and_rounds_up() {
        // gpt-4o: $2.50 / $10.00 per million tokens.
        let p = Price::from_usd_per_mtok(Some(2.5), Some(10.0));
        assert_eq!(p.cost_micros(1_000_000, 0), 2_500_000);
        assert_eq!(p.cost_micros(1000, 1000), 2_500 + 10_000);
        // gpt-4o-mini input: 0.15 $/Mtok = 150 n$/token; one token rounds up to 1 µ$.
        let mini = Price::from_usd_per_mtok(Some(0.15), Some(0.6));
        assert_eq!(mini.cost_micros(1, 0), 1);
        assert_eq!(mini.cost_micros(10, 0), 2);
    }

    #[test]
    fn missing_or_bad_prices_are_free() {
        let p = Price::from_usd_per_mtok(None, Some(f64::NAN));
        assert_eq!(p.cost_micros(1000, 1000), 0);
        assert_eq!(Price::default(), p);
    }

    #[test]
    fn usd_conversions() {
        assert_eq!(usd_to_micros(100.0), 100_000_000);
        assert_eq!(usd_to_micros(-1.0), 0);
        assert!((micros_to_usd(1_500_000) - 1.5).abs() < 1e-9);
    }
}
