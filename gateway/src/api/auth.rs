//! Bearer-token authentication.
//!
//! The token lives in a file that only its owner may read (mode 0600 or
//! stricter: refused otherwise, so a world-readable token is never used).
//! Requests present it as `Authorization: Bearer <token>`; it is compared
//! in constant time (`subtle`), so response timing does not reveal how
//! much of a guess was right.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use super::ApiError;

/// Shortest token accepted in the token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who may do what.
#[derive(Clone)]
pub struct Auth {
    /// `None`: no token configured, every mutation is refused.
    token: Option<Vec<u8>>,
    read_requires_token: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read_requires_token", &self.read_requires_token)
            .finish()
    }
}

impl Auth {
    pub fn new(token: Option<String>, read_requires_token: bool) -> Auth {
        Auth {
            token: token.map(String::into_bytes),
            read_requires_token,
        }
    }

    /// Reads the token from `path`, refusing a file group or others can
    /// access, or a token shorter than [`MIN_TOKEN_LEN`].
    pub fn load_token(path: &Path) -> anyhow::Result<String> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("api.token_file {}", path.display()))?;
        if !meta.is_file() {
            bail!("api.token_file {}: not a regular file", path.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "api.token_file {}: mode {mode:04o} lets others read it; it must be 0600 or stricter (chmod 600 {})",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("api.token_file {}", path.display()))?;
        let token = text.trim().to_string();
        if token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace) {
            bail!(
                "api.token_file {}: the token must be at least {MIN_TOKEN_LEN} characters without whitespace",
                path.display()
            );
        }
        Ok(token)
    }

    /// Checks a read request.
    pub fn read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.read_requires_token {
            self.check(headers)
        } else {
            Ok(())
        }
    }

    /// Checks a mutation.
    pub fn write(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check(headers)
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "authorization",
                "this gateway has no api.token_file configured: the API is read-only",
            ));
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "missing: send Authorization: Bearer <token>",
            ));
        };
        let presented = value.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "not a bearer token: send Authorization: Bearer <token>",
            )
        })?;
        if bool::from(presented.ct_eq(token.as_slice())) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "wrong token",
            ))
        }
    }
}
