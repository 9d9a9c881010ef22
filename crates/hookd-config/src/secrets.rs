//! Where a webhook secret comes from: inline, an environment variable, or a file.

use std::path::{Path, PathBuf};

use hookd_core::Secret;

/// One `[verify] secrets` entry. Its `Debug` never shows an inline secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    /// `env:NAME`
    Env(String),
    /// `file:PATH`; `${VAR}` in the path is expanded from the environment, so
    /// `file:${CREDENTIALS_DIRECTORY}/webhook-secret` reads a systemd credential.
    File(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<hidden>)"),
            SecretSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl SecretSource {
    pub fn parse(entry: &str) -> Self {
        if let Some(name) = entry.strip_prefix("env:") {
            SecretSource::Env(name.to_owned())
        } else if let Some(path) = entry.strip_prefix("file:") {
            SecretSource::File(path.to_owned())
        } else {
            SecretSource::Inline(entry.to_owned())
        }
    }

    /// Reads the secret. Errors are messages for the operator and never contain the secret.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        let (bytes, origin) = self.read(base)?;
        Secret::new(bytes).map_err(|e| format!("{origin}: {e}"))
    }

    /// Reads a secret that is text (a password, a token, a `.creds` file).
    pub fn read_text(&self, base: &Path) -> Result<String, String> {
        let (bytes, origin) = self.read(base)?;
        String::from_utf8(bytes).map_err(|_| format!("{origin} is not UTF-8 text"))
    }

    fn read(&self, base: &Path) -> Result<(Vec<u8>, String), String> {
        Ok(match self {
            SecretSource::Inline(value) => (value.clone().into_bytes(), "the inline secret".into()),
            SecretSource::Env(name) => match std::env::var_os(name) {
                Some(value) => (
                    value.into_encoded_bytes(),
                    format!("environment variable `{name}`"),
                ),
                None => return Err(format!("environment variable `{name}` is not set")),
            },
            SecretSource::File(raw) => {
                let path = base.join(expand_vars(raw)?);
                let mut bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
                // `echo secret > file` leaves a newline that is not part of the secret.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                (bytes, format!("secret file `{}`", path.display()))
            }
        })
    }
}

/// Expands `${NAME}` from the environment; an unset variable is an error.
fn expand_vars(raw: &str) -> Result<PathBuf, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in secret path `{raw}`"))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            format!("environment variable `{name}` (used in secret path `{raw}`) is not set")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_forms() {
        assert_eq!(SecretSource::parse("env:X"), SecretSource::Env("X".into()));
        assert_eq!(
            SecretSource::parse("file:/a"),
            SecretSource::File("/a".into())
        );
        assert_eq!(
            SecretSource::parse("abc"),
            SecretSource::Inline("abc".into())
        );
    }

    #[test]
    fn file_secrets_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "0123456789abcdef-secret\n").unwrap();
        let secret = SecretSource::File("s".into()).resolve(dir.path()).unwrap();
        assert_eq!(secret.expose(), b"0123456789abcdef-secret");
    }

    #[test]
    fn unset_variables_are_named() {
        let err = expand_vars("${HOOKD_TEST_SURELY_UNSET}/s").unwrap_err();
        assert!(err.contains("HOOKD_TEST_SURELY_UNSET"), "{err}");
    }
}
