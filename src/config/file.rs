//! Serde types mirroring the TOML file.
