-- park: a try failed for good; park it for an operator if one is online, in one round trip.
-- KEYS: 1 incident hash, 2 tries hash, 3 message hash, 4 open zset, 5 active zset, 6 deadlines zset,
--       7 resolved zset, 8 presence zset, 9 stream, 10 ids zset
-- ARGV: 1 now (unix s), 2 task id, 3 try number, 4 presence cutoff (unix s), 5 deadline (unix s),
--       6 stream maxlen, 7 retention (s), 8 incident fields (JSON object), 9 try record (JSON),
--       10 message fields (JSON object), 11 addressed names (JSON array; empty = anyone)
-- Returns: {'parked', stream id} | {'already', 'open'} (same try parked before and still open:
--          a redelivery) | {'unattended'} (nothing written) | {'closed'} (a retried try failed
--          unattended; incident resolved as failed) | {'stale', state} (an older try than the
--          incident's, or the same try after a decision on it: a duplicate; nothing written)
-- Errors: WRONGTYPE when a key holds another type (nothing written)
local refused = check_types({'hash', 'hash', 'hash', 'zset', 'zset', 'zset', 'zset', 'zset', 'stream', 'zset'})
if refused then return refused end
local now, id, try_no = ARGV[1], ARGV[2], tonumber(ARGV[3])
local k = {incident = KEYS[1], tries = KEYS[2], message = KEYS[3], open = KEYS[4], active = KEYS[5],
           deadlines = KEYS[6], resolved = KEYS[7]}

local cur = redis.call('HMGET', KEYS[1], 'state', 'try')
local state, cur_try = cur[1], tonumber(cur[2] or '0')
if state then
  if try_no < cur_try or (FINAL[state] and try_no <= cur_try) then return {'stale', state} end
  -- Once decided, a late copy of the same try must not re-announce it: the decision owns the flow.
  if try_no == cur_try and state == 'open' then return {'already', state} end
  if try_no == cur_try and state ~= 'running' then return {'stale', state} end
end

local attended = false
local addressed = cjson.decode(ARGV[11])
if #addressed == 0 then
  attended = redis.call('ZCOUNT', KEYS[8], ARGV[4], '+inf') > 0
else
  for _, name in ipairs(addressed) do
    local seen = redis.call('ZSCORE', KEYS[8], name)
    if seen and tonumber(seen) >= tonumber(ARGV[4]) then attended = true break end
  end
end

local fields = cjson.decode(ARGV[8])
if not attended then
  if not state then return {'unattended'} end
  redis.call('HSET', KEYS[2], try_no, ARGV[9])
  resolve(k, id, now, ARGV[7], 'failed', {outcome = 'failed', exc_type = fields.exc_type,
          exc_message = fields.exc_message, resolved_by = 'unattended'})
  emit(KEYS[9], ARGV[6], 'type', 'incident.failed', 'id', id, 'try', try_no, 'operator', '',
       'reason', 'no operator online', 'task', fields.task)
  return {'closed'}
end

-- A re-park clears the previous try's decision; it stays in the try history.
redis.call('HDEL', KEYS[1], 'decision', 'decided_by', 'decided_at', 'reason', 'decided_host',
           'result', 'decision_options')
fields.state = 'open'
fields.try = try_no
fields.opened_at = now
fields.deadline = ARGV[5]
hset_table(KEYS[1], fields)
redis.call('HSETNX', KEYS[1], 'fence', '0')
redis.call('HSETNX', KEYS[1], 'created_at', now)
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[2], try_no, ARGV[9])
redis.call('PERSIST', KEYS[2])
hset_table(KEYS[3], cjson.decode(ARGV[10]))
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[7], id)
redis.call('ZADD', KEYS[6], ARGV[5], id)
redis.call('ZADD', KEYS[10], 0, id)
local entry = emit(KEYS[9], ARGV[6], 'type', 'incident.opened', 'id', id, 'try', try_no,
  'task', fields.task, 'exc_type', fields.exc_type, 'exc_message', fields.exc_message,
  'subject', fields.subject or '', 'body', fields.body or '', 'addressed', fields.addressed or '[]',
  'deadline', ARGV[5])
return {'parked', entry}
