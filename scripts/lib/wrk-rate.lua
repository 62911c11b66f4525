-- A wrk script that holds the request rate at a target (Debian's wrk has no
-- rate option):
--   wrk -s scripts/lib/wrk-rate.lua ... URL -- REQUESTS_PER_SECOND THREADS
-- Each wrk thread paces its share of the rate on a schedule of its own, one
-- slot every THREADS/REQUESTS_PER_SECOND seconds: before each request, a
-- connection takes the next free slot and waits for it (delay()). The rate
-- follows the clock, not the latency: a thread that falls behind (a slow
-- response, the machine busy elsewhere) sends without waiting until it is
-- back on schedule, making up at most one second's worth of slots.
-- wrk starts each request's latency after the wait.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } wrk_rate_timespec;
int clock_gettime(int clock, wrk_rate_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local CATCH_UP_MS = 1000
local timespec = ffi.new("wrk_rate_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local interval_ms -- between two of this thread's requests
local next_slot -- when this thread's next request is due, in ms

function init(args)
  local rate, threads = tonumber(args[1]), tonumber(args[2])
  if not rate or rate <= 0 or not threads or threads <= 0 then
    error("usage: wrk -s wrk-rate.lua ... URL -- REQUESTS_PER_SECOND THREADS")
  end
  interval_ms = 1000 * threads / rate
end

function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  elseif next_slot < now - CATCH_UP_MS then
    next_slot = now - CATCH_UP_MS
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  if wait <= 0 then
    return 0
  end
  -- wrk's timers count whole milliseconds; the schedule keeps the rest.
  return math.floor(wait)
end
