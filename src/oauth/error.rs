//! What can go wrong getting a token, and what the client is told for each.

/// Getting an access token failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint could not be reached, did not answer in time, or answered with a
    /// server error or something unreadable: temporary (`NO [UNAVAILABLE]`).
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The grant is no longer valid (`invalid_grant`: revoked, expired, consent withdrawn):
    /// the account must be enrolled again (`NO [AUTHENTICATIONFAILED]`).
    #[error("grant refused by the authorization server: {0}")]
    InvalidGrant(String),
    /// No refresh token is stored for the account (`imapgate oauth enroll` was not run).
    #[error("no refresh token stored (run `imapgate oauth enroll`)")]
    NotEnrolled,
    /// The authorization server refused the client or the request (`invalid_client`,
    /// `unauthorized_client`, `invalid_scope`, ...): a configuration problem.
    #[error("token request refused: {0}")]
    Refused(String),
    /// The account is not configured.
    #[error("unknown OAuth account")]
    UnknownAccount,
    /// The token store failed (I/O, Redis, decryption).
    #[error("token store: {0}")]
    Store(String),
}

impl OAuthError {
    /// The IMAP answer to a login that needed this token: `(code, text)`.
    pub fn answer(&self) -> (&'static str, &'static str) {
        match self {
            OAuthError::InvalidGrant(_) | OAuthError::NotEnrolled => {
                ("AUTHENTICATIONFAILED", "Authentication failed.")
            }
            OAuthError::Unavailable(_) | OAuthError::Store(_) => (
                "UNAVAILABLE",
                "Authentication service temporarily unavailable.",
            ),
            OAuthError::Refused(_) | OAuthError::UnknownAccount => {
                ("UNAVAILABLE", "Authentication service misconfigured.")
            }
        }
    }

    /// A fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            OAuthError::Unavailable(_) => "unavailable",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::NotEnrolled => "not_enrolled",
            OAuthError::Refused(_) => "refused",
            OAuthError::UnknownAccount => "unknown_account",
            OAuthError::Store(_) => "store",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            OAuthError::InvalidGrant("x".into()).answer().0,
            "AUTHENTICATIONFAILED"
        );
        assert_eq!(
            OAuthError::Unavailable("x".into()).answer().0,
            "UNAVAILABLE"
        );
        assert_eq!(OAuthError::Store("x".into()).answer().0, "UNAVAILABLE");
    }
}
