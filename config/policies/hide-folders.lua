-- hide-folders.lua: some mailboxes do not exist as far as clients can tell.
--
-- They are left out of LIST, LSUB and STATUS responses (NOTIFY's included), and SELECT,
-- EXAMINE, STATUS, APPEND, COPY/MOVE into them, DELETE, RENAME and SUBSCRIBE get
-- `NO [NONEXISTENT]`, however the name is sent (quoted, atom or literal). A name the proxy
-- cannot read (a literal it did not hold, as with APPEND) is refused with `NO [CANNOT]`.
--
-- Patterns use LIST wildcards: `*` matches anything, `%` anything but a hierarchy delimiter.
-- Names are as the server spells them (modified UTF-7: "Entw&APw-rfe" for "Entwürfe").

local HIDDEN = { "Archive", "Archive.*", "Folder With Spaces" }

-- Administrators see everything.
local ADMINS = { admin = true }

function on_login(ctx)
  if ADMINS[ctx.user] then
    return nil
  end
  return { hide = HIDDEN }
end
