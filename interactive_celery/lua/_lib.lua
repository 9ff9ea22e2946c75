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

-- Append an operator message: emit(stream, maxlen, name1, value1, name2, value2, ...). A field whose
-- value is nil is left out. Flat arguments rather than a table walked with pairs: a timeout writes
-- one per incident, and the table cost ~10 us of Redis time each (make bench, issue 6).
local function emit(stream, maxlen, ...)
  local fields, n = {...}, select('#', ...)
  local flat = {'v', '1'}
  for i = 1, n, 2 do
    if fields[i + 1] ~= nil then
      flat[#flat + 1] = fields[i]
      flat[#flat + 1] = fields[i + 1]
    end
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

-- Why an incident cannot take a decision now, from HMGET state, try, id, decision, decided_by,
-- decided_at, reason, superseded_why; nil when it is open. Data edited by hand is an error reply.
local function refusal(key, cur)
  local state = cur[1]
  if not state then return {'unknown'} end
  if not cur[2] or not cur[3] then return redis.error_reply('WRONGTYPE ' .. key .. ' lacks its id or try field') end
  if state == 'superseded' then return {'superseded', cur[8] or ''} end
  if state ~= 'open' then
    if cur[4] then return {'decided', cur[4], cur[5] or '', cur[6] or '', cur[7] or ''} end
    return {'not_waiting', state}
  end
  return nil
end

-- Record a decision on an open incident once the compare-and-set has passed (decide, expire).
-- k = {incident, tries, open, active, deadlines, audit, decisions, stream}. `record` is the try's
-- JSON record, read by the caller before any write, to copy the decision into; nil for a timeout,
-- whose decision readers take from the incident hash (incidents.with_timeout). `host` nil leaves
-- it out of the stream entry. `moved`, when given, collects the id for the caller to move between
-- the indexes in one command per batch.
local function record_decision(k, id, try_no, record, now, decision, operator, reason, host, maxlen, moved)
  if decision == 'timeout' then
    -- Who and why are implied (incidents.implied_decision): three fewer fields inserted into the
    -- incident's ziplist took a third off a timeout's Redis time (make bench, issue 6).
    redis.call('HSET', k.incident, 'state', 'decided', 'decision', decision, 'decided_at', now)
  else
    redis.call('HSET', k.incident, 'state', 'decided', 'decision', decision, 'decided_by', operator,
               'decided_at', now, 'reason', reason, 'decided_host', host)
  end
  if moved then
    moved[#moved + 1] = id
  else
    redis.call('ZREM', k.open, id)
    redis.call('ZADD', k.active, now, id)
    redis.call('ZREM', k.deadlines, id)
    redis.call('ZADD', k.audit, now, id .. ':' .. try_no)
  end
  if record then
    local ok, t = pcall(cjson.decode, record)
    if ok and type(t) == 'table' then
      t.decision, t.decided_by, t.decided_at, t.reason, t.decided_host = decision, operator, tonumber(now), reason, host
      redis.call('HSET', k.tries, try_no, cjson.encode(t))
    end
  end
  -- Never capped: a cap could trim decisions no worker has applied yet. Appliers delete what they ack.
  redis.call('XADD', k.decisions, '*', 'v', '1', 'id', id, 'try', try_no, 'decision', decision)
  emit(k.stream, maxlen, 'type', 'incident.decided', 'id', id, 'try', try_no, 'decision', decision,
       'operator', operator, 'reason', reason, 'host', host)
end

-- Mark an operator, and each group they declare, as seen now. "Online since" restarts when the
-- operator comes back after being away past the presence cutoff.
local function beat(presence, operator_hash, now, operator, groups_json, host, retention, cutoff)
  local groups = cjson.decode(groups_json)  -- before the first write: malformed JSON changes nothing
  redis.call('ZADD', presence, now, operator)
  for _, g in ipairs(groups) do redis.call('ZADD', presence, now, 'team:' .. g) end
  local last = redis.call('HGET', operator_hash, 'last_seen')
  if not last or tonumber(last) < tonumber(cutoff) then redis.call('HSET', operator_hash, 'since', now) end
  redis.call('HSET', operator_hash, 'groups', groups_json, 'host', host, 'last_seen', now)
  redis.call('EXPIRE', operator_hash, retention)
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
