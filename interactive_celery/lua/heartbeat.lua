-- heartbeat: mark an operator (and the groups they declare) as seen now; report who is online.
-- KEYS: 1 presence zset, 2 operator hash
-- ARGV: 1 now, 2 operator name, 3 groups (JSON array), 4 host, 5 retention (s), 6 presence cutoff
-- Returns: number of presence entries seen since the cutoff (operators and groups)
-- Errors: WRONGTYPE when a key holds another type (nothing written)
local refused = check_types({'zset', 'hash'})
if refused then return refused end
local groups = cjson.decode(ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
for _, g in ipairs(groups) do redis.call('ZADD', KEYS[1], ARGV[1], 'team:' .. g) end
-- "Online since" restarts when the operator comes back after being away past the limit.
local last = redis.call('HGET', KEYS[2], 'last_seen')
if not last or tonumber(last) < tonumber(ARGV[6]) then redis.call('HSET', KEYS[2], 'since', ARGV[1]) end
redis.call('HSET', KEYS[2], 'groups', ARGV[3], 'host', ARGV[4], 'last_seen', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return redis.call('ZCOUNT', KEYS[1], ARGV[6], '+inf')
