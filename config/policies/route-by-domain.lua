-- route-by-domain.lua: the domain of the login name picks the upstream.
--
-- "alice@example.com" logs in at the upstream named for example.com, as "alice" (the domain is
-- how the proxy routes; the servers behind it know their users by their local part). A domain
-- with no route, or a name without a domain, is refused with NO [AUTHENTICATIONFAILED].
-- Every upstream named here must be configured ([upstreams.NAME] in imapgate.toml).

local ROUTES = {
  ["example.com"] = "default",
  ["example.org"] = "eu",
}

function on_login(ctx)
  local localpart, domain = (ctx.user or ""):match("^(.+)@([^@]+)$")
  local upstream = domain and ROUTES[domain:lower()]
  if not upstream then
    return { deny = "Unknown domain.", code = "AUTHENTICATIONFAILED" }
  end
  return { upstream = upstream, user = localpart, password = ctx.password,
           audit = { routed = upstream } }
end
