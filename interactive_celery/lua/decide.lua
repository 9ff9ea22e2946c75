-- decide: record an operator's decision (or a timeout) with one compare-and-set; first one wins.
-- KEYS: 1 incident hash, 2 open zset, 3 active zset, 4 deadlines zset, 5 decisions stream,
--       6 stream, 7 presence zset, 8 audit zset, 9 operator hash, 10 tries hash
-- ARGV: 1 now, 2 decision (retry|fail|ignore|timeout), 3 operator, 4 reason, 5 operator host,
--       6 stream maxlen, 7 result JSON (ignore) or '', 8 allow any operator ('1'|'0'),
--       9 decision options JSON ('' for none)
-- Returns: {'ok', try} | {'unknown'} | {'superseded', why} | {'not_waiting', state}
--        | {'decided', decision, by, at, reason} | {'not_addressed', addressed JSON}
--        | {'not_due'} (timeout only: the deadline moved or is not reached)
-- Errors: WRONGTYPE when a key holds another type or the incident lacks id/try (nothing written)
local refused = check_types({'hash', 'zset', 'zset', 'zset', 'stream', 'stream', 'zset', 'zset', 'hash', 'hash'})
if refused then return refused end
local now, decision, operator = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'decision', 'decided_by', 'decided_at',
                       'reason', 'superseded_why', 'addressed', 'id')
local state, try_no, id = cur[1], cur[2], cur[9]
if not state then return {'unknown'} end
if not id or not try_no then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' lacks its id or try field')
end
if state == 'superseded' then return {'superseded', cur[7] or ''} end
if state ~= 'open' then
  if cur[3] then return {'decided', cur[3], cur[4] or '', cur[5] or '', cur[6] or ''} end
  return {'not_waiting', state}
end

if decision == 'timeout' then
  local due = redis.call('ZSCORE', KEYS[4], id)
  if not due or tonumber(due) > tonumber(now) then return {'not_due'} end
else
  local addressed = cjson.decode(cur[8] or '[]')
  if #addressed > 0 and ARGV[8] ~= '1' then
    local groups = cjson.decode(redis.call('HGET', KEYS[9], 'groups') or '[]')
    local mine = {[operator] = true}
    for _, g in ipairs(groups) do mine['team:' .. g] = true end
    local ok = false
    for _, a in ipairs(addressed) do if mine[a] then ok = true break end end
    if not ok then return {'not_addressed', cur[8]} end
  end
  redis.call('ZADD', KEYS[7], now, operator)
end

redis.call('HSET', KEYS[1], 'state', 'decided', 'decision', decision, 'decided_by', operator,
           'decided_at', now, 'reason', ARGV[4], 'decided_host', ARGV[5])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[7]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'decision_options', ARGV[9]) end
redis.call('ZREM', KEYS[2], id)
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[8], now, id .. ':' .. try_no)
-- The decision also goes into the try's history record, which outlives the stream's cap.
local record = redis.call('HGET', KEYS[10], try_no)
if record then
  local ok, t = pcall(cjson.decode, record)
  if ok and type(t) == 'table' then
    t.decision = decision
    t.decided_by = operator
    t.decided_at = tonumber(now)
    t.reason = ARGV[4]
    t.decided_host = ARGV[5]
    redis.call('HSET', KEYS[10], try_no, cjson.encode(t))
  end
end
-- Never capped: a cap could trim decisions no worker has applied yet. Appliers delete what they ack.
redis.call('XADD', KEYS[5], '*', 'v', '1', 'id', id, 'try', try_no,
           'decision', decision)
emit(KEYS[6], ARGV[6], {type = 'incident.decided', id = id, try = try_no, decision = decision,
     operator = operator, reason = ARGV[4], host = ARGV[5]})
return {'ok', try_no}
