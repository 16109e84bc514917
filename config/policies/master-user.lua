-- master-user.lua: support staff open a user's mailbox with their own master credentials.
--
-- A client logs in as "alice*support" with the password of the master user "support" (as with
-- Dovecot's master users). The proxy checks the master is one it knows and logs in upstream as
-- alice through the master user:
--   FORM = "plain":   SASL PLAIN with authzid "alice", authcid "support" (the upstream must
--                     offer AUTH=PLAIN and accept "support" as a master user);
--   FORM = "dovecot": LOGIN "alice*support" (Dovecot's auth_master_user_separator form).
-- The master's password is checked by the upstream, never by this script.
-- Instead of the client's password, a master password can come from the configuration:
-- `password = secret("support")` with `[policy.secrets] support = "..."`.

local FORM = "plain"
local SEPARATOR = "*"
local MASTERS = { support = true }

function on_login(ctx)
  local user, master = (ctx.user or ""):match("^(.+)%*([^*]+)$")
  if not user then
    return nil -- an ordinary login
  end
  if not MASTERS[master] or not ctx.password then
    return { deny = "Authentication failed.", code = "AUTHENTICATIONFAILED" }
  end
  return {
    master = master, user = user, password = ctx.password,
    form = FORM, separator = SEPARATOR,
    audit = { master = master, as = user },
  }
end
