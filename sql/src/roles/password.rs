//! Passwords as SCRAM-SHA-256 verifiers, in the form PostgreSQL stores
//! them: `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`
//! (salt and keys in base64). A verifier lets a door check a SCRAM proof
//! without the password, and is never the password itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Result, SqlError};

const PREFIX: &str = "SCRAM-SHA-256$";

/// A parsed verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The verifier of `password`, with a fresh random salt (SASLprep'd, 4096
/// iterations, as PostgreSQL makes them).
pub fn verifier_of(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// What a `PASSWORD '…'` clause stores: a verifier given as one (as
/// `pg_dump` writes them) is kept as it is; anything else is a password
/// and is replaced by its verifier.
pub fn stored_form(given: &str) -> String {
    if given.starts_with(PREFIX) && Verifier::parse(given).is_ok() {
        given.to_string()
    } else {
        verifier_of(given)
    }
}

impl Verifier {
    /// Whether `password` is the one this verifier was made from: its
    /// SCRAM stored key is recomputed (SASLprep, PBKDF2-HMAC-SHA-256 over
    /// the salt, then HMAC and SHA-256) and compared in constant time. For
    /// doors that receive a password rather than a SCRAM exchange.
    pub fn matches(&self, password: &str) -> bool {
        use ring::{digest, hmac, pbkdf2};
        let normalized = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let Some(iterations) = std::num::NonZeroU32::new(self.iterations) else {
            return false;
        };
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &self.salt,
            normalized.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        // Every byte compared, whatever differs first.
        stored.as_ref().len() == self.stored_key.len()
            && stored
                .as_ref()
                .iter()
                .zip(&self.stored_key)
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0
    }

    /// Reads a stored verifier.
    pub fn parse(text: &str) -> Result<Verifier> {
        let bad = || SqlError::Internal("stored password verifier unreadable".into());
        let rest = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| STANDARD.decode(s).map_err(|_| bad());
        Ok(Verifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0).ok_or_else(bad)?,
            salt: decode(salt)?,
            stored_key: decode(stored_key)?,
            server_key: decode(server_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_parses_and_never_holds_the_password() {
        let v = verifier_of("pencil");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("pencil"));
        let parsed = Verifier::parse(&v).unwrap();
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.stored_key.len(), 32);
        assert_eq!(parsed.server_key.len(), 32);
        // A fresh salt each time.
        assert_ne!(verifier_of("pencil"), v);
        // A verifier given as the password is kept; a password is not.
        assert_eq!(stored_form(&v), v);
        assert_ne!(stored_form("pencil"), "pencil");
        assert!(parsed.matches("pencil"));
        assert!(!parsed.matches("pencil "));
        assert!(!parsed.matches(""));
        assert!(Verifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_err());
        assert!(Verifier::parse("md5abc").is_err());
    }
}
