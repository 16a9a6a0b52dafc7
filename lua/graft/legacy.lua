-- graft.legacy: a team's own Lua functions, declared as the legacy side of
-- a module where they already live, in place of lua/graft/legacy/<name>.lua.
--
--   init_by_lua_block {
--       require("graft.legacy").declare("bot_detection", require("myteam.bots").decide)
--       require "graft"      -- after every declare: it checks them all
--   }
--
-- The function is called as fn(req, config, zone) for each request the
-- step serves from Lua (req: the fields of graft.contract; config: the
-- step's configuration; zone: its zone's name), and returns a decision of
-- graft.contract (continue, or respond). What it throws or returns that is
-- not a decision is the step's failure: its on_failure decides.

local error = error
local type = type

local _M = { version = "0.1.0" }

local declared = {}
local sealed = false

-- Declares fn as the legacy side of module `name`.
function _M.declare(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then
        error("graft.legacy.declare(name, function)", 2)
    end
    if sealed then
        error("graft.legacy.declare(\"" .. name .. "\"): declare before require \"graft\" "
              .. "in init_by_lua, which checks every legacy side once", 2)
    end
    declared[name] = fn
end

-- A module-shaped table over a declared function, or nil.
function _M.find(name)
    local fn = declared[name]
    if not fn then
        return nil
    end
    return {
        new = function(config, zone)
            return {
                on_request = function(_, req)
                    return fn(req, config, zone)
                end,
            }
        end,
    }
end

-- Called by graft once it has checked every legacy side.
function _M.seal()
    sealed = true
end

return _M
