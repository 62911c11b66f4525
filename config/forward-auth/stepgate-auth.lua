-- stepgate-auth.lua: HAProxy asks stepgate about every request, as Traefik
-- and Caddy do (the `forward` dialect). A 2xx lets the request on, with
-- stepgate's identity headers in place of any the client sent, and the
-- browser's cookies without stepgate's own (the app never holds a session); any other
-- answer (a redirect to the portal, JSON for API clients, a 403 page) goes
-- back to the client as stepgate wrote it. Needs HAProxy 2.6 or newer
-- built with Lua (Debian's is), loaded with `lua-load` in `global`.
local authorizer = "http://127.0.0.1:9000/.stepgate/authz/forward"
local identity = { "x-stepgate-assertion", "remote-user", "remote-groups", "remote-email", "remote-name" }
-- Of stepgate's refusals, what reaches the client.
local passed_back = { "location", "set-cookie", "content-type", "www-authenticate", "retry-after", "cache-control" }

-- The values of a header in HAProxy's 0-indexed tables, as a Lua list.
local function values(headers, name)
    local found, list = headers[name], {}
    if found then
        for i = 0, #found do
            if found[i] ~= nil then table.insert(list, found[i]) end
        end
    end
    return list
end

core.register_action("stepgate-auth", { "http-req" }, function(txn)
    local request = txn.http:req_get_headers()
    local question = {
        ["x-forwarded-method"] = { txn.sf:method() },
        ["x-forwarded-proto"] = { txn.sf:ssl_fc() == "1" and "https" or "http" },
        ["x-forwarded-host"] = values(request, "host"),
        ["x-forwarded-uri"] = { txn.sf:pathq() },
        ["x-forwarded-for"] = { txn.sf:src() },
        ["cookie"] = values(request, "cookie"),
        ["accept"] = values(request, "accept"),
        ["user-agent"] = values(request, "user-agent"),
    }
    local answer = core.httpclient():get({ url = authorizer, headers = question, timeout = 5000 })
    local status = answer and tonumber(answer.status) or 0
    for _, name in ipairs(identity) do
        txn.http:req_del_header(name)
    end
    if status >= 200 and status < 300 then
        for _, name in ipairs(identity) do
            for _, value in ipairs(values(answer.headers, name)) do
                txn.http:req_add_header(name, value)
            end
        end
        txn.http:req_del_header("cookie")
        for _, value in ipairs(values(answer.headers, "x-stepgate-cookie")) do
            if value ~= "" then txn.http:req_add_header("cookie", value) end
        end
        return
    end
    if status == 0 then
        -- stepgate did not answer: fail closed.
        txn:done(txn:reply({ status = 503, body = "The sign-in service is unavailable.\n" }))
        return
    end
    local headers = {}
    for _, name in ipairs(passed_back) do
        local list = values(answer.headers, name)
        if #list > 0 then headers[name] = list end
    end
    txn:done(txn:reply({ status = status, headers = headers, body = answer.body or "" }))
end)
