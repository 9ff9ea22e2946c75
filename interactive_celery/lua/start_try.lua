-- start_try: a message sent by an applier arrives at a worker. Admit it once per fencing token.
-- KEYS: 1 incident hash, 2 tries hash, 3 message hash, 4 open zset, 5 active zset,
--       6 deadlines zset, 7 resolved zset, 8 stream
-- ARGV: 1 now, 2 try, 3 fence, 4 Celery retries of this message, 5 redelivered ('1'|'0'),
--       6 archive retries ('1'|'0'), 7 retention (s), 8 stream maxlen, 9 try record (JSON)
-- Returns: {'run'} | {'replay', decision, exception JSON, traceback, result JSON}
--        | {'fenced', state} (a duplicate or late message: drop it)
local now, id = ARGV[1], nil
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'fence', 'decision', 'celery_retries', 'id',
                       'result', 'task')
local state, try_no, fence = cur[1], cur[2], cur[3]
id = cur[6]
if not state or try_no ~= ARGV[2] or fence ~= ARGV[3] then return {'fenced', state or 'gone'} end
local k = {incident = KEYS[1], tries = KEYS[2], message = KEYS[3], open = KEYS[4], active = KEYS[5],
           deadlines = KEYS[6], resolved = KEYS[7]}

local retries = tonumber(ARGV[4])
-- A running try admits Celery's own retries of it (autoretry_for), and a redelivery of the same
-- message after a worker died; never a second copy sent by an applier.
local again = state == 'running' and (ARGV[5] == '1' or retries > tonumber(cur[5] or '0'))
if state == 'retrying' or again then
  redis.call('HSET', KEYS[1], 'state', 'running', 'celery_retries', retries, 'started_at', now)
  redis.call('HSET', KEYS[2], try_no, ARGV[9])
  if ARGV[6] == '0' then
    -- Without the archive keep only the latest finished try and this one.
    for _, n in ipairs(redis.call('HKEYS', KEYS[2])) do
      if tonumber(n) < tonumber(try_no) - 1 then redis.call('HDEL', KEYS[2], n) end
    end
  end
  if state == 'retrying' then
    emit(KEYS[8], ARGV[8], 'type', 'incident.retried', 'id', id, 'try', try_no, 'task', cur[8])
  end
  return {'run'}
end
if state == 'replaying' then
  local decision = cur[4]
  local outcome = (decision == 'ignore') and 'ignored' or 'failed'
  local saved = redis.call('HMGET', KEYS[3], 'exc', 'traceback')
  saved[2] = saved_traceback(saved[2], KEYS[2], try_no)
  resolve(k, id, now, ARGV[7], outcome, {outcome = outcome})
  local kind = (decision == 'ignore' and 'incident.ignored') or
               (decision == 'timeout' and 'incident.timed_out') or 'incident.failed'
  emit(KEYS[8], ARGV[8], 'type', kind, 'id', id, 'try', try_no, 'task', cur[8])
  return {'replay', decision, saved[1] or '', saved[2] or '', cur[7] or ''}
end
return {'fenced', state}
