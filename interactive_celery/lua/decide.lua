-- decide: record an operator's decision with one compare-and-set; first one wins (timeouts race it
-- through expire.lua). The call is also the operator's heartbeat, even when the decision is refused,
-- so a decision on an exact id costs one round trip.
-- KEYS: 1 incident hash, 2 open zset, 3 active zset, 4 deadlines zset, 5 decisions stream,
--       6 stream, 7 presence zset, 8 audit zset, 9 operator hash, 10 tries hash
-- ARGV: 1 now, 2 decision (retry|fail|ignore), 3 operator, 4 reason, 5 operator host,
--       6 stream maxlen, 7 result JSON (ignore) or '', 8 allow any operator ('1'|'0'),
--       9 decision options JSON ('' for none), 10 operator's groups (JSON array), 11 retention (s),
--       12 presence cutoff
-- Returns: {'ok', try} | {'unknown'} | {'superseded', why} | {'not_waiting', state}
--        | {'decided', decision, by, at, reason} | {'not_addressed', addressed JSON}
-- Errors: WRONGTYPE when a key holds another type or the incident lacks id/try (nothing written)
local refused = check_types({'hash', 'zset', 'zset', 'zset', 'stream', 'stream', 'zset', 'zset', 'hash', 'hash'})
if refused then return refused end
local now, decision, operator = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'id', 'decision', 'decided_by', 'decided_at',
                       'reason', 'superseded_why', 'addressed')
if cur[1] and (not cur[2] or not cur[3]) then return refusal(KEYS[1], cur) end  -- before the heartbeat
beat(KEYS[7], KEYS[9], now, operator, ARGV[10], ARGV[5], ARGV[11], ARGV[12])
local refused_now = refusal(KEYS[1], cur)
if refused_now then return refused_now end
local try_no, id = cur[2], cur[3]

local addressed = cjson.decode(cur[9] or '[]')
if #addressed > 0 and ARGV[8] ~= '1' then
  local mine = {[operator] = true}
  for _, g in ipairs(cjson.decode(ARGV[10])) do mine['team:' .. g] = true end
  local ok = false
  for _, a in ipairs(addressed) do if mine[a] then ok = true break end end
  if not ok then return {'not_addressed', cur[9]} end
end

if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[7]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'decision_options', ARGV[9]) end
record_decision({incident = KEYS[1], tries = KEYS[10], open = KEYS[2], active = KEYS[3], deadlines = KEYS[4],
                 audit = KEYS[8], decisions = KEYS[5], stream = KEYS[6]},
                id, try_no, redis.call('HGET', KEYS[10], try_no), now, decision, operator, ARGV[4], ARGV[5], ARGV[6])
return {'ok', try_no}
