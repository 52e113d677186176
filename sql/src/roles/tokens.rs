//! Bearer tokens: what a door that authenticates once per session (the
//! Flight handshake, the HTTP admin's login) hands its client, so later
//! calls carry a token instead of a password. A token names its user, ends
//! at its expiry, and is revoked with its user's password, login right or
//! role. Tokens live in this agent's memory: a restart, or another agent,
//! asks the client to log in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use streamhouse_log::{ClockRef, Micros};

/// How long a token lasts unless revoked.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Tokens at most; past it the oldest expiry goes first.
const MAX_TOKENS: usize = 100_000;

struct Token {
    user: String,
    expires_at: Micros,
}

/// The tokens this agent issued.
pub struct Tokens {
    clock: ClockRef,
    lifetime: Duration,
    random: SystemRandom,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Tokens {
    pub fn new(clock: ClockRef, lifetime: Duration) -> Tokens {
        Tokens {
            clock,
            lifetime,
            random: SystemRandom::new(),
            tokens: Mutex::default(),
        }
    }

    /// A new token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let mut bytes = [0u8; 32];
        // The system's random source failing is not something to go on from.
        self.random
            .fill(&mut bytes)
            .expect("the system random source works");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = self.clock.now_micros();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, t| t.expires_at > now);
        if tokens.len() >= MAX_TOKENS
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, t)| t.expires_at)
                .map(|(k, _)| k.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(
            token.clone(),
            Token {
                user: user.to_string(),
                expires_at: now.saturating_add(self.lifetime.as_micros() as i64),
            },
        );
        token
    }

    /// The user of `token`, if it is live.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = self.clock.now_micros();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            Some(t) if t.expires_at > now => Some(t.user.clone()),
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// Revokes one token; whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token)
            .is_some()
    }

    /// Revokes every token of `user`.
    pub fn revoke_user(&self, user: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.user != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use streamhouse_log::ManualClock;

    #[test]
    fn tokens_expire_and_are_revoked() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let tokens = Tokens::new(clock.clone(), Duration::from_secs(60));
        let a = tokens.issue("alice");
        let b = tokens.issue("bob");
        assert_ne!(a, b);
        assert_eq!(tokens.user_of(&a).as_deref(), Some("alice"));
        assert_eq!(tokens.user_of("made-up"), None);
        tokens.revoke_user("alice");
        assert_eq!(tokens.user_of(&a), None);
        assert_eq!(tokens.user_of(&b).as_deref(), Some("bob"));
        clock.advance(61_000_000);
        assert_eq!(tokens.user_of(&b), None);
        let c = tokens.issue("bob");
        assert!(tokens.revoke(&c));
        assert_eq!(tokens.user_of(&c), None);
    }
}
