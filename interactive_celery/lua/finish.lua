-- finish: an operator-issued try succeeded; close the incident.
-- KEYS: 1 incident hash, 2 tries hash, 3 message hash, 4 open zset, 5 active zset,
--       6 deadlines zset, 7 resolved zset, 8 stream
-- ARGV: 1 now, 2 try, 3 fence, 4 retention (s), 5 stream maxlen, 6 try record (JSON)
-- Returns: {'ok'} | {'fenced', state}
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'fence', 'id', 'task')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return {'fenced', cur[1] or 'gone'} end
local k = {incident = KEYS[1], tries = KEYS[2], message = KEYS[3], open = KEYS[4], active = KEYS[5],
           deadlines = KEYS[6], resolved = KEYS[7]}
redis.call('HSET', KEYS[2], ARGV[2], ARGV[6])
resolve(k, cur[4], ARGV[1], ARGV[4], 'succeeded', {outcome = 'succeeded'})
emit(KEYS[8], ARGV[5], 'type', 'incident.succeeded', 'id', cur[4], 'try', ARGV[2], 'task', cur[5])
return {'ok'}
