-- supersede: Celery ended the flow itself (revoked, a redelivered try succeeded, a hard time limit).
-- KEYS: 1 incident hash, 2 tries hash, 3 message hash, 4 open zset, 5 active zset,
--       6 deadlines zset, 7 resolved zset, 8 stream
-- ARGV: 1 now, 2 why, 3 Celery state seen, 4 retention (s), 5 stream maxlen
-- Returns: {'ok'} | {'final', state} | {'gone'}
local cur = redis.call('HMGET', KEYS[1], 'state', 'id', 'try', 'task')
if not cur[1] then return {'gone'} end
if FINAL[cur[1]] then return {'final', cur[1]} end
local k = {incident = KEYS[1], tries = KEYS[2], message = KEYS[3], open = KEYS[4], active = KEYS[5],
           deadlines = KEYS[6], resolved = KEYS[7]}
resolve(k, cur[2], ARGV[1], ARGV[4], 'superseded', {outcome = ARGV[3], superseded_why = ARGV[2]})
emit(KEYS[8], ARGV[5], 'type', 'incident.superseded', 'id', cur[2], 'try', cur[3], 'task', cur[4],
     'reason', ARGV[2])
return {'ok'}
