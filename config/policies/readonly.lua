-- readonly.lua: mail can be read, nothing can be changed.
--
-- Only commands that read are let through (an allow-list, so a command this file does not know,
-- REPLACE or XMOVE say, is refused too); SELECT is sent as EXAMINE, so the mailbox is opened
-- read-only on the server (FETCH BODY[] does not set \Seen, CLOSE does not expunge).
-- STORE, APPEND, EXPUNGE, COPY, MOVE, CREATE, DELETE, RENAME, SUBSCRIBE, SETMETADATA, SETACL...
-- get `NO [NOPERM] This account is read-only.`; with UID or without, however they are sent.

local READ = {
  CAPABILITY = true, NOOP = true, LOGOUT = true, ID = true, ENABLE = true,
  EXAMINE = true, LIST = true, LSUB = true, NAMESPACE = true, STATUS = true,
  CHECK = true, CLOSE = true, UNSELECT = true, IDLE = true,
  FETCH = true, SEARCH = true, SORT = true, THREAD = true, ESEARCH = true,
  GETQUOTA = true, GETQUOTAROOT = true, GETMETADATA = true,
  GETACL = true, MYRIGHTS = true, LISTRIGHTS = true, NOTIFY = true,
}

function on_command(ctx)
  if ctx.command == "SELECT" then
    return { examine = true }
  end
  if READ[ctx.command] then
    return nil
  end
  return { deny = "This account is read-only.", code = "NOPERM" }
end
