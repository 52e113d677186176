//! Compatibility levels and modes, by the names the REST API uses.

use crate::error::RegistryError;

/// Which earlier versions a new schema of a subject must be compatible
/// with, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    /// The new schema reads data written with the latest version.
    Backward,
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    ForwardTransitive,
    /// Both.
    Full,
    FullTransitive,
    None,
}

impl Compatibility {
    /// What a registry without settings uses.
    pub const DEFAULT: Compatibility = Compatibility::Backward;

    pub fn name(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::None => "NONE",
        }
    }

    pub fn parse(name: &str) -> Result<Compatibility, RegistryError> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "BACKWARD" => Compatibility::Backward,
            "BACKWARD_TRANSITIVE" => Compatibility::BackwardTransitive,
            "FORWARD" => Compatibility::Forward,
            "FORWARD_TRANSITIVE" => Compatibility::ForwardTransitive,
            "FULL" => Compatibility::Full,
            "FULL_TRANSITIVE" => Compatibility::FullTransitive,
            "NONE" => Compatibility::None,
            _ => return Err(RegistryError::InvalidCompatibilityLevel(name.to_string())),
        })
    }

    /// Checked against every earlier version, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// The new schema must read data of the earlier ones.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// The earlier schemas must read data of the new one.
    pub fn forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }
}

/// Whether a subject (or the registry) takes new versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    /// Registering with given ids (migrations from another registry);
    /// taken as a name, refused on use.
    Import,
}

impl Mode {
    pub const DEFAULT: Mode = Mode::ReadWrite;

    pub fn name(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }

    pub fn parse(name: &str) -> Result<Mode, RegistryError> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "READWRITE" => Mode::ReadWrite,
            "READONLY" | "READONLY_OVERRIDE" => Mode::ReadOnly,
            "IMPORT" => Mode::Import,
            _ => return Err(RegistryError::InvalidMode(name.to_string())),
        })
    }
}
