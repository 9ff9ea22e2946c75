-- Shared helpers, prepended to every script by store.py (Redis 6.2 has no function libraries).
-- Nothing here touches a key that the including script did not receive in KEYS.

local function hset_table(key, t)
  local flat = {}
  for k, v in pairs(t) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
end

local function emit(stream, maxlen, fields)
  local flat = {'v', '1'}
  for k, v in pairs(fields) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(flat))
end

local FINAL = {succeeded = true, failed = true, ignored = true, superseded = true}

-- The traceback of a failed try is kept once, in its try record. Message hashes written before that
-- (record v1 of older releases) still carry a copy, which wins when present.
local function saved_traceback(copy, tries, try_no)
  if copy then return copy end
  local raw = redis.call('HGET', tries, try_no)
  if not raw then return '' end
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and type(record.traceback) == 'string' then return record.traceback end
  return ''
end

-- Close an incident for good: out of every live index, into the resolved index, and onto a TTL.
-- k = {incident, tries, message, open, active, deadlines, resolved}
local function resolve(k, id, now, retention, outcome, extra)
  local t = extra or {}
  t.state = outcome
  t.resolved_at = now
  hset_table(k.incident, t)
  redis.call('ZREM', k.open, id)
  redis.call('ZREM', k.active, id)
  redis.call('ZREM', k.deadlines, id)
  redis.call('ZADD', k.resolved, now, id)
  redis.call('DEL', k.message)
  redis.call('EXPIRE', k.incident, retention)
  redis.call('EXPIRE', k.tries, retention)
end

-- Refuse keys that hold another type (edited by hand, or written by something else): checked
-- before the first write, so a refused script changes nothing. The error starts with WRONGTYPE,
-- which the store turns into CorruptData. kinds[i] is the type expected of KEYS[i].
local function check_types(kinds)
  for i, kind in ipairs(kinds) do
    local found = redis.call('TYPE', KEYS[i]).ok
    if found ~= 'none' and found ~= kind then
      return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. found .. ', not a ' .. kind)
    end
  end
  return nil
end
