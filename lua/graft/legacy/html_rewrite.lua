-- html_rewrite, the Lua twin (the Rust one is
-- modules/html_rewrite, on lol_html): the response body is collected
-- chunk by chunk (ngx.arg in a body filter), and rewritten whole at its
-- end, as a Lua stack would do it: a small HTML tokenizer (tags,
-- attributes in any quoting, comments, raw-text elements) finds what to
-- change. Plain Lua (no ngx): the parity tests run it in LuaJIT alone.
--
-- It writes a changed tag out again exactly as lol_html does: its name,
-- each attribute after one space (unchanged ones as they were, the
-- changed one as name="value" with " as &quot;), then " />" or ">".

local byte = string.byte
local concat = table.concat
local find = string.find
local gsub = string.gsub
local lower = string.lower
local match = string.match
local sub = string.sub
local ipairs = ipairs
local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local MAX_TEXT = 64 * 1024
-- The bounds of the Rust side (modules/html_rewrite): head_end's copies in
-- one document (MAX_INSERTED), and the memory a rewrite may hold
-- (MAX_MEMORY; this side holds the body whole, so that bounds the body).
local MAX_INSERTED = 1024 * 1024
local MAX_HELD = 8 * 1024 * 1024
local tostring = tostring
local pcall = pcall

-- Elements whose content is not markup (lol_html: RawText, RCData,
-- ScriptData).
local RAW = {
    script = true, style = true, textarea = true, title = true, xmp = true,
    iframe = true, noembed = true, noframes = true, noscript = true,
}
local LINKS = { href = true, src = true, action = true }

function _M.new(conf)
    local hosts = {}
    for i, h in ipairs(conf.https_hosts or {}) do
        hosts[i] = lower(h)
    end
    return setmetatable({
        head_end = conf.head_end,
        hosts = hosts,
        obfuscate_emails = conf.obfuscate_emails == true,
    }, mt)
end

local function is_local(b)
    return b and ((b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122)
        or b == 46 or b == 95 or b == 37 or b == 43 or b == 45)
end

local function is_alpha(b)
    return (b >= 65 and b <= 90) or (b >= 97 and b <= 122)
end

-- The length of the longest start of `run` that is a domain: labels of
-- letters, digits and "-", none empty, at least two, the last of two
-- letters or more (graft_html_rewrite::domain_len).
local function domain_len(run)
    local best
    local label_start = 1
    local labels = 1
    local n = #run
    for i = 1, n + 1 do
        if i == n + 1 or byte(run, i) == 46 then
            local label = sub(run, label_start, i - 1)
            if label == "" then
                break
            end
            if labels >= 2 and #label >= 2 and not find(label, "[^A-Za-z]") then
                best = i - 1
            end
            labels = labels + 1
            label_start = i + 1
        end
    end
    return best
end

-- Each "@" with an address character just before it and a domain just
-- after it becomes "&#64;" (graft_html_rewrite::obfuscate).
function _M.obfuscate(text)
    local out = {}
    local from = 1
    local i = 1
    local n = #text
    while true do
        local at = find(text, "@", i, true)
        if not at then
            break
        end
        if at > 1 and is_local(byte(text, at - 1)) then
            local run = match(text, "^[A-Za-z0-9.-]*", at + 1)
            local len = domain_len(run)
            if len then
                out[#out + 1] = sub(text, from, at - 1)
                out[#out + 1] = "&#64;"
                from = at + 1
                i = at + 1 + len
            else
                i = at + 1
            end
        else
            i = at + 1
        end
        if i > n then
            break
        end
    end
    out[#out + 1] = sub(text, from)
    return concat(out)
end

local function upgrade(value, hosts)
    if lower(sub(value, 1, 7)) ~= "http://" then
        return nil
    end
    local rest = sub(value, 8)
    local host = match(rest, "^[^/?#:]*")
    host = lower(host)
    for i = 1, #hosts do
        if hosts[i] == host then
            return "https://" .. rest
        end
    end
    return nil
end

local WS = "[\t\n\f\r ]"

-- A start tag at `lt`: the tag written out (as it was, or again when an
-- attribute changed), its lower-case name, and where it ends.
local function start_tag(self, doc, lt)
    local name_end = (find(doc, "[\t\n\f\r />]", lt + 1) or (#doc + 1)) - 1
    local name = sub(doc, lt + 1, name_end)
    local j = name_end + 1
    local attrs = {}
    local self_closing = false
    local n = #doc
    while j <= n do
        j = find(doc, "[^\t\n\f\r ]", j) or (n + 1)
        local c = sub(doc, j, j)
        if c == ">" then
            j = j + 1
            break
        elseif c == "/" then
            if sub(doc, j + 1, j + 1) == ">" then
                self_closing = true
                j = j + 2
                break
            end
            j = j + 1
        elseif c ~= "" then
            local ns = j
            j = (find(doc, "[\t\n\f\r />=]", j + 1) or (n + 1))
            local aname = sub(doc, ns, j - 1)
            local k = find(doc, "[^\t\n\f\r ]", j) or (n + 1)
            local attr = { name = lower(aname), source_name = aname }
            if sub(doc, k, k) == "=" then
                k = find(doc, "[^\t\n\f\r ]", k + 1) or (n + 1)
                local q = sub(doc, k, k)
                local vs, ve, next_j
                if q == '"' or q == "'" then
                    local close = find(doc, q, k + 1, true) or (n + 1)
                    vs, ve, next_j = k + 1, close - 1, close + 1
                elseif q == ">" then
                    vs, ve, next_j = k, k - 1, k
                else
                    local stop = find(doc, "[\t\n\f\r >]", k) or (n + 1)
                    vs, ve, next_j = k, stop - 1, stop
                end
                attr.value = sub(doc, vs, ve)
                attr.raw = sub(doc, ns, next_j - 1)
                j = next_j
            else
                attr.value = ""
                attr.raw = aname
            end
            attrs[#attrs + 1] = attr
        end
    end
    local lname = lower(name)
    local changed = false
    if #self.hosts > 0 then
        local seen = {}
        for _, a in ipairs(attrs) do
            if LINKS[a.name] and not seen[a.name] then
                seen[a.name] = true
                local up = upgrade(a.value, self.hosts)
                if up then
                    a.raw = a.source_name .. '="' .. gsub(up, '"', "&quot;") .. '"'
                    changed = true
                end
            end
        end
    end
    if not changed then
        return sub(doc, lt, j - 1), lname, j
    end
    local out = { "<", name }
    for _, a in ipairs(attrs) do
        out[#out + 1] = " "
        out[#out + 1] = a.raw
    end
    out[#out + 1] = self_closing and " />" or ">"
    return concat(out), lname, j
end

-- The text gathered since the last markup goes out (its e-mail addresses
-- obfuscated when the configuration asks), and `text` is emptied.
local function flush(self, out, text)
    local count = #text
    if count == 0 then
        return
    end
    local t = concat(text)
    for k = count, 1, -1 do
        text[k] = nil
    end
    if self.obfuscate_emails and #t <= MAX_TEXT then
        t = _M.obfuscate(t)
    end
    out[#out + 1] = t
end

-- Markup from `lt` through its `close` (a comment's "-->", searched from
-- `from`; anything else's ">"), or to the document's end with none,
-- copied as it is; returns where the document goes on.
local function copy_markup(doc, n, out, lt, close, from)
    local e = find(doc, close, from, true)
    local stop = e and e + #close - 1 or n
    out[#out + 1] = sub(doc, lt, stop)
    return stop + 1
end

-- An end tag at `lt`, copied as it is; before "</head>", the
-- configuration's head_end, counted against MAX_INSERTED. Returns where
-- the document goes on and the bytes inserted so far.
local function end_tag(self, doc, low, n, out, lt, inserted)
    local stop = find(doc, ">", lt, true) or n
    local name = match(low, "^</([^\t\n\f\r />]*)", lt)
    if name == "head" and self.head_end then
        inserted = inserted + #self.head_end
        if inserted > MAX_INSERTED then
            error("head_end would insert more than " .. MAX_INSERTED
                  .. " bytes into this document (a copy per <head>)")
        end
        out[#out + 1] = self.head_end
    end
    out[#out + 1] = sub(doc, lt, stop)
    return stop + 1, inserted
end

-- The content of a raw-text element (`name`, from `i`): it runs to its
-- own end tag, markup or not, and is copied as it is. Returns where its
-- end tag starts (past the document's end with none).
local function raw_content(doc, low, n, out, i, name)
    local e = i - 1
    local stop
    repeat
        e = find(low, "</" .. name, e + 1, true)
        if not e then
            break
        end
        local c = sub(low, e + 2 + #name, e + 2 + #name)
        if c == "" or find(c, "[\t\n\f\r />]") then
            stop = e
        end
    until stop
    stop = stop or (n + 1)
    out[#out + 1] = sub(doc, i, stop - 1)
    return stop
end

-- Rewrites a whole document.
function _M.rewrite(self, doc)
    local inserted = 0
    local out = {}
    local text = {}
    local low = lower(doc)
    local n = #doc
    local i = 1
    while i <= n do
        local lt = find(doc, "<", i, true)
        if not lt then
            text[#text + 1] = sub(doc, i)
            break
        end
        if lt > i then
            text[#text + 1] = sub(doc, i, lt - 1)
        end
        local nb = byte(doc, lt + 1)
        if sub(doc, lt, lt + 3) == "<!--" then
            flush(self, out, text)
            i = copy_markup(doc, n, out, lt, "-->", lt + 4)
        elseif nb == 33 or nb == 63 then -- "<!" (doctype) or "<?"
            flush(self, out, text)
            i = copy_markup(doc, n, out, lt, ">", lt)
        elseif nb == 47 and byte(doc, lt + 2) and is_alpha(byte(doc, lt + 2)) then -- "</x"
            flush(self, out, text)
            i, inserted = end_tag(self, doc, low, n, out, lt, inserted)
        elseif nb == 47 and lt + 2 <= n then
            -- "</" and no letter: "</>" or a bogus comment, up to ">".
            flush(self, out, text)
            i = copy_markup(doc, n, out, lt, ">", lt)
        elseif nb and is_alpha(nb) then
            flush(self, out, text)
            local tag, name, after = start_tag(self, doc, lt)
            out[#out + 1] = tag
            i = after
            if RAW[name] then
                i = raw_content(doc, low, n, out, i, name)
            end
        else
            text[#text + 1] = "<"
            i = lt + 1
        end
    end
    flush(self, out, text)
    return concat(out)
end

-- The request phase: nothing to decide.
function _M.on_request()
    return { kind = "continue" }
end

-- The body phase: a rewriter for a text/html, uncompressed response, or
-- nil. It collects the body and rewrites it at its end.
function _M.on_response_body(self, head)
    local ct = head.content_type and lower(match(head.content_type, "^[^;]*")) or ""
    ct = match(ct, "^[\t\n\f\r ]*(.-)[\t\n\f\r ]*$")
    local ce = head.content_encoding and lower(match(head.content_encoding,
                                                      "^[\t\n\f\r ]*(.-)[\t\n\f\r ]*$")) or ""
    if ct ~= "text/html" or (ce ~= "" and ce ~= "identity") then
        return nil
    end
    local module = self
    local parts, held = {}, 0
    local rw = {}
    -- Past MAX_HELD, or a rewrite that throws, the rewriter gives up: what
    -- it held goes on as it came, and `gave_up` says why (graft.response
    -- counts it as failed and passes the rest as it is).
    rw.write = function(_, chunk)
        if rw.gave_up then
            return chunk
        end
        held = held + #chunk
        parts[#parts + 1] = chunk
        if held > MAX_HELD then
            rw.gave_up = "the body is over " .. MAX_HELD .. " bytes, which its Lua side holds whole"
            local raw = concat(parts)
            parts = nil
            return raw
        end
        return ""
    end
    rw.finish = function()
        if rw.gave_up then
            return ""
        end
        local raw = concat(parts)
        parts = nil
        local ok, out = pcall(module.rewrite, module, raw)
        if ok then
            return out
        end
        rw.gave_up = "its Lua side threw: " .. tostring(out)
        return raw
    end
    return rw
end

return _M
