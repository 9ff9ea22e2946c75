-- apply: a worker claims a recorded decision and bumps the fencing token; it then sends the message.
-- Safe to run again for the same decision (the applier died before XACK): it returns the same fence,
-- and start_try admits only one message per fence.
-- KEYS: 1 incident hash, 2 message hash, 3 deadlines zset, and 4 only when the result backend is
--       this Redis database: the flow's Celery result key. Reading it here saves the applier a
--       round trip of its own before every decision (make bench, issue 6).
-- ARGV: 1 now, 2 worker name, 3 try number named by the decision entry, 4 replay fallback time
-- Returns: {'send', decision, fence, try, decision options JSON or '', message fields (flat)...}
--        | {'stale', state} | {'gone'}
--        | {'ended', Celery state}: Celery already stored a ready state; nothing written
--        | {'ask_celery'}: the result key holds what this script cannot read (compressed, not
--          JSON, another type); nothing written, the caller reads it through Celery
local cur = redis.call('HMGET', KEYS[1], 'state', 'try', 'decision', 'id')
local state, try_no, decision, id = cur[1], tonumber(cur[2] or '0'), cur[3], cur[4]
if not state then return {'gone'} end
if KEYS[4] then
  local read, meta = pcall(redis.call, 'GET', KEYS[4])
  if not read then return {'ask_celery'} end
  if meta then
    local ok, m = pcall(cjson.decode, meta)
    if not ok or type(m) ~= 'table' then return {'ask_celery'} end
    -- celery.states.READY_STATES
    if m.status == 'SUCCESS' or m.status == 'FAILURE' or m.status == 'REVOKED' then return {'ended', m.status} end
  end
end
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
