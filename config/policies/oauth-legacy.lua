-- oauth-legacy.lua: legacy mail clients that only know LOGIN / AUTHENTICATE PLAIN keep working
-- against a provider that has switched basic authentication off (Microsoft 365, Gmail).
--
-- Each local user logs in with a local password, checked here against its Argon2id hash (make
-- one with `imapgate hash-password`). The proxy then logs in upstream as the user's mailbox
-- with XOAUTH2 or OAUTHBEARER (the upstream's `oauth_mechanism`) and an access token it obtains
-- itself for the user's account ([oauth.accounts.NAME] in the configuration; enrol it once with
-- `imapgate oauth enroll NAME`). The provider password exists nowhere, and no password ever goes
-- upstream for these users. Anyone else is refused.
--
-- A wrong local password is refused (and counted by the brute-force protection); it never
-- touches the stored tokens.

-- users: begin
local USERS = {
  -- local name = { hash = Argon2id PHC string, account = [oauth.accounts] name, mailbox = upstream user }
  alice = {
    hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0000000000000000000000000000000000000000000",
    account = "alice-m365",
    mailbox = "alice@example.com",
  },
}
-- users: end

function on_login(ctx)
  local u = USERS[ctx.user or ""]
  if not u or not ctx.password then
    -- Unknown users, and token logins (XOAUTH2/OAUTHBEARER carry no local password).
    return { deny = "Authentication failed.", code = "AUTHENTICATIONFAILED" }
  end
  return {
    oauth = u.account,
    user = u.mailbox,
    password_hash = u.hash,
    audit = { oauth_account = u.account },
  }
end
