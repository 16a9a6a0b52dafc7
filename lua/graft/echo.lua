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

return function()
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
