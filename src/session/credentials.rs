//! What a client logged in with, decoded from LOGIN or an AUTHENTICATE exchange, in a form the
//! upstream login (and later, auth rewriting) can use. Every credential lives in a [`Secret`], and
//! a decoded SASL message that carried one is wiped once read.
//!
//! ```text
//! PLAIN       message = [authzid] UTF8NUL authcid UTF8NUL passwd      ; RFC 4616
//! XOAUTH2     "user=" user ^A "auth=Bearer " token ^A ^A             ; Google/Microsoft
//! OAUTHBEARER gs2-header ^A *(kvpair ^A) ^A, gs2-header = "n,a=" user "," ; RFC 7628
//! ```

use crate::secret::{Secret, Wiped};

/// A token mechanism: relayed as it is from a client, or used with the proxy's own token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMechanism {
    /// `XOAUTH2`
    Xoauth2,
    /// `OAUTHBEARER` (RFC 7628)
    Oauthbearer,
}

impl TokenMechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TokenMechanism::Xoauth2 => "XOAUTH2",
            TokenMechanism::Oauthbearer => "OAUTHBEARER",
        }
    }
}

/// How the client proved who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A password, from `LOGIN` or the PLAIN / LOGIN SASL mechanisms.
    Password {
        /// Authorization identity (PLAIN only; usually empty).
        authzid: Vec<u8>,
        /// The user name.
        user: Vec<u8>,
        /// The password.
        password: Secret,
        /// True when the client used the LOGIN command (so the upstream gets LOGIN too).
        login_command: bool,
    },
    /// A bearer token in a SASL message the proxy passes on unchanged.
    Token {
        /// Which mechanism.
        mechanism: TokenMechanism,
        /// The user named inside the message, if it could be read (for logs and routing).
        user: Option<Vec<u8>>,
        /// The decoded SASL initial response.
        message: Secret,
    },
    /// Log in upstream as `user` with an access token the proxy obtains for `account`
    /// (`[oauth.accounts.NAME]`), by the upstream's `oauth_mechanism` (XOAUTH2 or OAUTHBEARER).
    /// Only a stage's rewrite produces it (the OAuth stage, the policy's `oauth` decision);
    /// no password ever goes upstream for it.
    OAuth {
        /// The user name sent upstream inside the SASL message.
        user: Vec<u8>,
        /// The account whose token is used.
        account: String,
    },
}

impl Credentials {
    /// The user name, for the session's log span.
    pub fn user(&self) -> Option<&[u8]> {
        match self {
            Credentials::Password { user, .. } => Some(user),
            Credentials::Token { user, .. } => user.as_deref(),
            Credentials::OAuth { user, .. } => Some(user),
        }
    }

    /// The password, for a password login.
    pub fn password(&self) -> Option<&Secret> {
        match self {
            Credentials::Password { password, .. } => Some(password),
            _ => None,
        }
    }

    /// Decodes a PLAIN message; `None` when malformed. The message holds the password, so it is
    /// taken and wiped.
    pub fn from_plain(message: Vec<u8>) -> Option<Credentials> {
        let message = Wiped::new(message);
        let mut parts = message.split(|&b| b == 0);
        let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || user.is_empty() {
            return None;
        }
        Some(Credentials::Password {
            authzid: authzid.to_vec(),
            user: user.to_vec(),
            password: Secret::new(password.to_vec()),
            login_command: false,
        })
    }

    /// Wraps a token mechanism's message, reading the user name from it.
    pub fn from_token(mechanism: TokenMechanism, message: Vec<u8>) -> Credentials {
        let user = match mechanism {
            TokenMechanism::Xoauth2 => message
                .split(|&b| b == 1)
                .find_map(|kv| kv.strip_prefix(b"user="))
                .map(<[u8]>::to_vec),
            TokenMechanism::Oauthbearer => message
                .split(|&b| b == 1)
                .next()
                .and_then(|gs2| {
                    gs2.split(|&b| b == b',')
                        .find_map(|f| f.strip_prefix(b"a="))
                })
                .map(<[u8]>::to_vec),
        };
        Credentials::Token {
            mechanism,
            user,
            message: Secret::new(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_and_tokens() {
        let Some(Credentials::Password { user, password, .. }) =
            Credentials::from_plain(b"\0alice\0secret".to_vec())
        else {
            panic!()
        };
        assert_eq!(
            (user.as_slice(), password.expose()),
            (&b"alice"[..], &b"secret"[..])
        );
        assert!(Credentials::from_plain(b"alice".to_vec()).is_none());
        assert!(Credentials::from_plain(b"\0\0pw".to_vec()).is_none());
        let c = Credentials::from_token(
            TokenMechanism::Xoauth2,
            b"user=bob\x01auth=Bearer t\x01\x01".to_vec(),
        );
        assert_eq!(c.user(), Some(&b"bob"[..]));
        let c = Credentials::from_token(
            TokenMechanism::Oauthbearer,
            b"n,a=carol,\x01auth=Bearer t\x01\x01".to_vec(),
        );
        assert_eq!(c.user(), Some(&b"carol"[..]));
        assert!(!format!("{c:?}").contains("Bearer"));
    }
}
