-- apply: a worker claims a recorded decision and bumps the fencing token; it then sends the message.
-- Safe to run again for the same decision (the applier died before XACK): it returns the same fence,
-- and start_try admits only one message per fence.
-- KEYS: 1 incident hash, 2 message hash, 3 deadlines zset
-- ARGV: 1 now, 2 worker name, 3 try number named by the decision entry, 4 replay fallback time
-- Returns: {'send', decision, fence, try, decision options JSON or '', message fields (flat)...}
--        | {'stale', state} | {'gone'}
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'decision', 'id')
local state, try_no, decision, id = cur[1], tonumber(cur[2] or '0'), cur[3], cur[4]
if not state then return {'gone'} end
local named = tonumber(ARGV[3])
if state == 'decided' and try_no == named then
  local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
  if decision == 'retry' then
    try_no = try_no + 1
    redis.call('HSET', KEYS[1], 'state', 'retrying', 'try', try_no)
  else
    redis.call('HSET', KEYS[1], 'state', 'replaying')
    redis.call('ZADD', KEYS[3], ARGV[4], id)
  end
  redis.call('HSET', KEYS[1], 'applied_by', ARGV[2], 'applied_at', ARGV[1])
elseif not ((state == 'retrying' and try_no == named + 1) or (state == 'replaying' and try_no == named)) then
  return {'stale', state}
end
local fence = redis.call('HGET', KEYS[1], 'fence')
local reply = {'send', decision, fence, tostring(try_no),
               redis.call('HGET', KEYS[1], 'decision_options') or ''}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do reply[#reply + 1] = v end
return reply
