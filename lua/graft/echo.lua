-- A stand-in origin for graft's example configuration and tests: it
-- answers with the URI and the request headers it received, so that what
-- the modules changed shows in the response, and the length of the body
-- it received (all of it, however much the modules inspected).

local ngx = ngx
local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local sort = table.sort
local type = type

-- An HTML page with what html_rewrite changes (a head, links to
-- example.com over http, addresses in text, a script and a comment), for
-- /html/<n>/...: sent in chunks of n bytes, each flushed on its own.
local PAGE = table.concat({
    "<!DOCTYPE html>\n<html><head><title>Shop é</title>",
    "<link rel=stylesheet href=\"http://cdn.example.com/s.css\"></head>\n<body>",
    "<p>Write to sales@example.com or ünïcødé 日本語 help@cdn.example.com.</p>",
    "<a href='http://example.com/cart?x=1' class=big>cart</a>",
    "<img src=http://other.net/i.png alt=\"é\">",
    "<!-- ops@example.com <a href=\"http://example.com/\"> -->",
    "<script>var m = \"eve@example.org\"; if (a < b) {}</script>",
    "<form action=\"http://example.com:8443/post\" method=post></form>",
    "</body></html>\n",
})

local function html(n)
    ngx.header["Content-Type"] = "text/html; charset=utf-8"
    ngx.header["Content-Length"] = #PAGE
    for i = 1, #PAGE, n do
        ngx.print(PAGE:sub(i, i + n - 1))
        ngx.flush(true)
    end
end

return function()
    local n = tonumber(ngx.var.uri:match("^/html/(%d+)/"))
    if n and n > 0 then
        return html(n)
    end
    local headers = ngx.req.get_headers(0)
    local names = {}
    for name in pairs(headers) do
        names[#names + 1] = name
    end
    sort(names)
    local out = { "origin: ", ngx.var.uri, "\n" }
    for _, name in ipairs(names) do
        local v = headers[name]
        if type(v) == "table" then
            v = concat(v, ", ")
        end
        out[#out + 1] = name .. ": " .. v .. "\n"
    end
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    local file = not data and ngx.req.get_body_file()
    if data then
        out[#out + 1] = "body: " .. #data .. " bytes\n"
    elseif file then
        local f = io.open(file, "rb")
        out[#out + 1] = "body: " .. (f and f:seek("end") or "unreadable") .. " bytes\n"
        if f then
            f:close()
        end
    end
    ngx.print(out)
end
