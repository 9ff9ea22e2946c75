-- expire: time out every named incident whose decision deadline has passed, in one call.
-- The sweeper's batch: the compare-and-set decide.lua makes for an operator, for many incidents at
-- once and lighter, because one script call per incident capped a worker at ~2.6k transitions/s
-- (make bench, issue 6): the deadlines are read with one ZMSCORE, the indexes move with one command
-- each, the incident gets only state, decision and time, and the try record is not rewritten
-- (readers take a timeout from the incident hash: incidents.implied_decision, with_timeout).
-- An incident hash of the wrong type is reported and skipped, with nothing of it written.
-- KEYS: 1 open zset, 2 active zset, 3 deadlines zset, 4 decisions stream, 5 stream, 6 audit zset,
--       then the i-th incident's hash at 6 + i
-- ARGV: 1 now, 2 stream maxlen, 3 reason, then the i-th incident's task id at 3 + i (at most ~3,000:
--       the index moves unpack two values per incident onto Lua's stack)
-- Returns: {number timed out, then for each incident that was not: its position (1-based), status}
--          where status is 'not_due' | 'unknown' | 'superseded' | 'not_waiting' | 'decided' | 'corrupt'
-- Errors: WRONGTYPE when a shared key holds another type (nothing written)
local refused = check_types({'zset', 'zset', 'zset', 'stream', 'stream', 'zset'})
if refused then return refused end
local now, maxlen, reason = ARGV[1], ARGV[2], ARGV[3]
local n = #ARGV - 3
if n == 0 then return {0} end
local k = {open = KEYS[1], active = KEYS[2], deadlines = KEYS[3], decisions = KEYS[4], stream = KEYS[5],
           audit = KEYS[6]}
local ids = {unpack(ARGV, 4)}
local due = redis.call('ZMSCORE', k.deadlines, unpack(ids))
local moved, tries, skipped = {}, {}, {}
for i = 1, n do
  k.incident = KEYS[6 + i]
  local status
  local ok, cur = pcall(redis.call, 'HMGET', k.incident, 'state', 'try', 'id', 'decision')
  local no = ok and refusal(k.incident, cur)
  if not ok or (no and no.err) or (not no and cur[3] ~= ids[i]) then
    status = 'corrupt'
  elseif no then
    status = no[1]
  elseif not due[i] or tonumber(due[i]) > tonumber(now) then
    status = 'not_due'
  else
    record_decision(k, ids[i], cur[2], nil, now, 'timeout', 'timeout', reason, nil, maxlen, moved)
    tries[#moved] = cur[2]
  end
  if status then
    skipped[#skipped + 1] = i
    skipped[#skipped + 1] = status
  end
end
if #moved > 0 then
  local active, audit = {}, {}
  for j, id in ipairs(moved) do
    active[2 * j - 1], active[2 * j] = now, id
    audit[2 * j - 1], audit[2 * j] = now, id .. ':' .. tries[j]
  end
  redis.call('ZREM', k.open, unpack(moved))
  redis.call('ZREM', k.deadlines, unpack(moved))
  redis.call('ZADD', k.active, unpack(active))
  redis.call('ZADD', k.audit, unpack(audit))
end
return {#moved, unpack(skipped)}
