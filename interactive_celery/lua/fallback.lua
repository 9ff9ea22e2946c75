-- fallback: no worker replayed a fail/timeout in time; the caller stores FAILURE directly.
-- KEYS: 1 incident hash, 2 tries hash, 3 message hash, 4 open zset, 5 active zset,
--       6 deadlines zset, 7 resolved zset, 8 stream
-- ARGV: 1 now, 2 retention (s), 3 stream maxlen
-- Returns: {'direct', decision, exception JSON, traceback, message body, content type, encoding}
--        | {'not_due'}
local cur = redis.call('HMGET', KEYS[1], 'state', 'id', 'try', 'decision', 'task')
if cur[1] ~= 'replaying' then return {'not_due'} end
local due = redis.call('ZSCORE', KEYS[6], cur[2])
if not due or tonumber(due) > tonumber(ARGV[1]) then return {'not_due'} end
local k = {incident = KEYS[1], tries = KEYS[2], message = KEYS[3], open = KEYS[4], active = KEYS[5],
           deadlines = KEYS[6], resolved = KEYS[7]}
local saved = redis.call('HMGET', KEYS[3], 'exc', 'traceback', 'body', 'content_type', 'content_encoding')
saved[2] = saved_traceback(saved[2], KEYS[2], cur[3])
-- Bumping the fence drops the replay message if a worker picks it up later.
redis.call('HINCRBY', KEYS[1], 'fence', 1)
resolve(k, cur[2], ARGV[1], ARGV[2], 'failed', {outcome = 'failed', replayed = 'direct'})
local kind = (cur[4] == 'timeout') and 'incident.timed_out' or 'incident.failed'
emit(KEYS[8], ARGV[3], 'type', kind, 'id', cur[2], 'try', cur[3], 'task', cur[5], 'reason', 'applied directly')
return {'direct', cur[4], saved[1] or '', saved[2] or '', saved[3] or '', saved[4] or '', saved[5] or ''}
