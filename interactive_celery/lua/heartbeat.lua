-- heartbeat: mark an operator (and the groups they declare) as seen now; report who is online.
-- KEYS: 1 presence zset, 2 operator hash
-- ARGV: 1 now, 2 operator name, 3 groups (JSON array), 4 host, 5 retention (s), 6 presence cutoff
-- Returns: number of presence entries seen since the cutoff (operators and groups)
-- Errors: WRONGTYPE when a key holds another type (nothing written)
local refused = check_types({'zset', 'hash'})
if refused then return refused end
beat(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return redis.call('ZCOUNT', KEYS[1], ARGV[6], '+inf')
