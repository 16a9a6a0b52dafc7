-- graft.plan: a zone's plan (its steps, their modes and their legacy
-- instances), read from the module as JSON and built once per zone and
-- configuration generation; and the check, at start, reload and live
-- apply, that every Lua twin a configuration names loads and builds.
local cjson = require "cjson.safe"
local base = require "resty.core.base"
local abi = require "graft.abi"
local declared = require "graft.legacy"

local C = require("ffi").C
local new_tab = base.new_tab
local call_with_buffer = abi.call_with_buffer
local read_string = abi.read_string
local ngx_log = ngx.log
local ERR = ngx.ERR
local collectgarbage = collectgarbage
local pcall = pcall
local require = require
local tostring = tostring
local type = type

local GRAFT_OK = abi.GRAFT_OK
local GRAFT_DONE = abi.GRAFT_DONE
local GRAFT_NO_CONFIG = abi.GRAFT_NO_CONFIG

local _M = {}

-- This worker's plans, for the generation they were built from.
local plans = {}
local plans_generation

-- A zone's plan from its JSON: one entry a step, with the step's legacy
-- instance, or the reason there is none (the step then fails by its
-- policy; a checked configuration never gets here without one).
local function plan_from(data)
    local steps = data.steps
    local plan = new_tab(#steps, 0)
    for i = 1, #steps do
        local step = steps[i]
        local entry = { zone = data.zone, module = step.module, mode = step.mode }
        -- A team's own function declared for the module comes first.
        local ok, mod = true, declared.find(step.module)
        if not mod then
            ok, mod = pcall(require, "graft.legacy." .. step.module)
        end
        if not ok then
            entry.missing = "no Lua twin of module \"" .. step.module .. "\": " .. tostring(mod)
        elseif type(mod) ~= "table" or type(mod.new) ~= "function" then
            entry.missing = "Lua module \"" .. step.module .. "\" has no new(config, zone): it returned "
                            .. tostring(mod)
        else
            local built, inst, ierr = pcall(mod.new, step.config, data.zone)
            if not built then
                entry.missing = "Lua module \"" .. step.module .. "\" failed to build: " .. tostring(inst)
            elseif not inst then
                entry.missing = "Lua module \"" .. step.module .. "\" refused its configuration: "
                                .. tostring(ierr)
            else
                entry.legacy = inst
            end
        end
        plan[i] = entry
    end
    -- How the zone reads request bodies (nil: it reads none).
    plan.body = data.body
    return plan
end

local function build_plan(r, zone)
    local json, err = read_string(function(buf, size)
        return C.graft_ffi_plan(r, zone, buf, size)
    end)
    if not json then
        return nil, err
    end
    local data, derr = cjson.decode(json)
    if not data then
        return nil, "graft: bad plan: " .. tostring(derr)
    end
    return plan_from(data)
end

-- Loads and builds every zone's plan of a configuration (`which`: the one
-- the master just loaded, or the one a live apply checks), one zone at a
-- time, and drops them: a worker builds a zone's plan when the zone first
-- serves. Returns true, or nil and an error naming the zone and module of
-- the first Lua twin that cannot be loaded or built (nil and nil:
-- no graft_config in this http block).
function _M.check(r, which)
    local zone = 0
    while true do
        local rc, json = call_with_buffer(function(buf, size)
            return C.graft_ffi_plans(r, which, zone, buf, size)
        end)
        if rc == GRAFT_DONE then
            return true
        end
        if rc == GRAFT_NO_CONFIG then
            return nil
        end
        if rc ~= GRAFT_OK then
            return nil, "graft: cannot read the plans: error " .. rc
        end
        local data, derr = cjson.decode(json)
        if not data then
            return nil, "graft: bad plan: " .. tostring(derr)
        end
        local plan = plan_from(data)
        for i = 1, #plan do
            if plan[i].missing then
                return nil, "graft: zone \"" .. plan[i].zone .. "\": module #" .. (i - 1)
                            .. " \"" .. plan[i].module .. "\": " .. plan[i].missing
            end
        end
        zone = zone + 1
        if zone % 256 == 0 then
            collectgarbage("collect")
        end
    end
end

-- The plan of `zone` in configuration `generation` (built on first use).
function _M.for_zone(r, zone, generation)
    if generation ~= plans_generation then
        plans = {}
        plans_generation = generation
    end
    local plan = plans[zone]
    if plan == nil then
        local err
        plan, err = build_plan(r, zone)
        if not plan then
            ngx_log(ERR, err)
            return nil, err
        end
        plans[zone] = plan
    end
    return plan
end

return _M
