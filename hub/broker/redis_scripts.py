"""Lua scripts of the Redis broker: each one is a step other workers must never see half done.

Ids are compared as numbers (ms, seq), never as strings: ``"9-0"`` sorts after ``"10-0"``.
Clocks: presence and rate limits read Redis ``TIME`` so that workers with skewed clocks still
agree on when a lease expires or a token refills (Redis 5+ replicates script effects, so
writes after ``TIME`` are allowed).
"""

from __future__ import annotations

_IDS = """
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function id_less(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
"""

# Keys of a reply are derived from KEYS' hash tag plus the reply id, so they share its slot.
_INFLIGHT = """
local function inflight(hash, deltas_prefix)
  local flat = redis.call('HGETALL', hash)
  local out = {}
  for i = 1, #flat, 2 do
    local reply = flat[i]
    local deltas = redis.call('LRANGE', deltas_prefix .. reply, 0, -1)
    out[#out + 1] = {reply, flat[i + 1], deltas}
  end
  return out
end
"""

APPEND = """
-- KEYS: log, meta, ref, inflight, deltas of finish_reply, deltas of start_reply
-- ARGV: body, publish_as, pub channel, history_max, has_dedupe, dedupe ttl ms,
--       finish_reply ('' for none), ttl ms of a finished reply's deltas,
--       owner ('' for any: with finish_reply, only the worker owning the reply finishes it),
--       start_reply ('' for none: else a reply to this message is in flight on owner at once),
--       '1' when a WAIT follows
local body = ARGV[1]
if ARGV[5] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    -- A WAIT after this call covers only this connection's writes: write something (the
    -- same TTL again), so it also covers the first store, which replicated before it.
    local ttl = redis.call('PTTL', KEYS[3])
    if ARGV[11] == '1' and ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
    return {'dup', seen}
  end
end
if ARGV[7] ~= '' then
  local state = redis.call('HGET', KEYS[4], ARGV[7])
  if not state then return {'gone'} end
  if ARGV[9] ~= '' and cjson.decode(state)[1] ~= ARGV[9] then return {'gone'} end
  redis.call('HDEL', KEYS[4], ARGV[7])
  redis.call('PEXPIRE', KEYS[5], ARGV[8])
end
local max = tonumber(ARGV[4])
local len = redis.call('XLEN', KEYS[1])
if len == 0 then
  redis.call('DEL', KEYS[2])
elseif len >= max then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - max + 1)
  redis.call('HSET', KEYS[2], 'trimmed', old[#old][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', max, '*', 'b', body)
redis.call('HSETNX', KEYS[2], 'epoch', id)
if ARGV[10] and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[10], cjson.encode({ARGV[9], '{"upto":"' .. id .. '"}'}))
  redis.call('DEL', KEYS[6])
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], id, 'PX', ARGV[6])
end
local kind = 'm'
if ARGV[2] == 'done' then kind = 'f' end
-- Packed as hub.broker.base.Envelope: kind|id|reply|seq|payload
redis.call('PUBLISH', ARGV[3], kind .. '|' .. id .. '|' .. ARGV[7] .. '|-1|' ..
  '{"type":"' .. ARGV[2] .. '","id":"' .. id .. '",' .. string.sub(body, 2))
return {'ok', id}
"""

REPLAY = (
    _IDS
    + _INFLIGHT
    + """
-- KEYS: log, meta, inflight.  ARGV: after ms, after seq, deltas prefix
-- Returns nil when the log cannot replay from there, else {{id, body}...}, {reply...}.
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then return false end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return false end
local a_ms, a_seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local e_ms, e_seq = parse_id(epoch)
if id_less(a_ms, a_seq, e_ms, e_seq) then return false end
local trimmed = redis.call('HGET', KEYS[2], 'trimmed')
if trimmed then
  local t_ms, t_seq = parse_id(trimmed)
  if id_less(a_ms, a_seq, t_ms, t_seq) then return false end
end
local l_ms, l_seq = parse_id(last[1][1])
if id_less(l_ms, l_seq, a_ms, a_seq) then return false end
local entries = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1] .. '-' .. ARGV[2], '+')) do
  local m, s = parse_id(entry[1])
  if id_less(a_ms, a_seq, m, s) then
    entries[#entries + 1] = {entry[1], entry[2][2]}
  end
end
return {entries, inflight(KEYS[3], ARGV[3])}
"""
)

INFLIGHT = (
    _INFLIGHT
    + """
-- KEYS: inflight.  ARGV: deltas prefix
return inflight(KEYS[1], ARGV[1])
"""
)

DELTA = """
-- KEYS: inflight, deltas.  ARGV: reply, owner, seq, text, pub channel, frame, deltas ttl ms
-- Only the owner streams (a worker that was frozen while another took its reply over must
-- not); a seq already kept is a retry whose answer was lost: neither kept nor sent again.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state or cjson.decode(state)[1] ~= ARGV[2] then return 'lost' end
local seq = tonumber(ARGV[3])
local kept = redis.call('LLEN', KEYS[2])
if seq < kept then return 'dup' end
if seq > kept then return redis.error_reply('delta ' .. seq .. ' after ' .. kept .. ' kept') end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'ok'
"""

CLAIM = """
-- KEYS: inflight, deltas.  ARGV: reply, dead worker, new owner
-- Exactly one worker moves a reply off a dead worker: the owner field is the fence.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return false end
local fields = cjson.decode(state)
if fields[1] ~= ARGV[2] then return false end
fields[1] = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(fields))
return {fields[2], redis.call('LRANGE', KEYS[2], 0, -1)}
"""

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

HEARTBEAT = (
    _NOW_MS
    + """
-- KEYS: workers.  ARGV: worker, '1' to stamp now, '0' to mark it dead (0).  Returns the ms
-- since the worker's previous stamp (0 for its first).
local previous = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], now)
else
  redis.call('HSET', KEYS[1], ARGV[1], 0)
end
if not previous then return 0 end
return math.floor(now - previous)
"""
)

DEAD_WORKERS = (
    _NOW_MS
    + """
-- KEYS: workers.  ARGV: this worker, ttl ms.  Returns {worker, last heard ms} of the others
-- unheard for longer than ttl (by the Redis clock, so skewed workers agree).
local out = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if flat[i] ~= ARGV[1] and now - tonumber(flat[i + 1]) > tonumber(ARGV[2]) then
    out[#out + 1] = {flat[i], flat[i + 1]}
  end
end
return out
"""
)

_HOLDERS = """
local function holders_get(hash, user)
  local st = redis.call('HGET', hash, user)
  if not st then return 0, nil end
  local bar = string.find(st, '|', 1, true)
  return tonumber(string.sub(st, 1, bar - 1)), string.sub(st, bar + 1)
end
local function presence_exit(online, hash, held, user)
  if redis.call('SREM', held, user) == 0 then return 0 end
  local count, member = holders_get(hash, user)
  count = count - 1
  redis.call('HSET', hash, user, math.max(count, 0) .. '|' .. member)
  if count > 0 then return 0 end
  redis.call('ZREM', online, member)
  return 1
end
"""

PRESENCE_ENTER = (
    _HOLDERS
    + """
-- KEYS: online, holders, held (this worker's).  ARGV: user, sort key.
-- Returns {changed, online count}.
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
  return {0, redis.call('ZCARD', KEYS[1])}
end
local count, member = holders_get(KEYS[2], ARGV[1])
if count > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], (count + 1) .. '|' .. member)
  return {0, redis.call('ZCARD', KEYS[1])}
end
redis.call('HSET', KEYS[2], ARGV[1], '1|' .. ARGV[2])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return {1, redis.call('ZCARD', KEYS[1])}
"""
)

PRESENCE_EXIT = (
    _HOLDERS
    + """
-- KEYS: online, holders, held.  ARGV: user.  Returns {changed, online count}.
local changed = presence_exit(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return {changed, redis.call('ZCARD', KEYS[1])}
"""
)

PRESENCE_PAGE = (
    _HOLDERS
    + """
-- KEYS: online, holders.  ARGV: after (user id or ''), limit + 1.
-- Returns {sort keys, online count}.
local start = '-'
if ARGV[1] ~= '' then
  local _, member = holders_get(KEYS[2], ARGV[1])
  if member then start = '(' .. member end
end
local keys = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, tonumber(ARGV[2]))
return {keys, redis.call('ZCARD', KEYS[1])}
"""
)

SET_TAKE = """
-- KEYS: a dead worker's list (its rooms, its limit slots).  Returns the members and deletes
-- the set, so exactly one caller sweeps each.
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"""

PRESENCE_SWEEP = (
    _HOLDERS
    + """
-- KEYS: online, holders, held (the dead worker's).  Returns {users gone offline, online count}.
local gone = {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if presence_exit(KEYS[1], KEYS[2], KEYS[3], user) == 1 then gone[#gone + 1] = user end
end
redis.call('DEL', KEYS[3])
return {gone, redis.call('ZCARD', KEYS[1])}
"""
)

RATE_TAKE = """
-- KEYS: bucket.  ARGV: rate (tokens/s), burst.  Returns seconds to wait, '0' when allowed.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(burst / rate * 1000) + 1000))
return string.format('%.17g', wait)
"""

SLOT_TAKE = (
    _NOW_MS
    + """
-- KEYS: slots.  ARGV: holder, limit, lease ms.  Returns 1 when held, 0 when all are taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local ttl = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""
)

SLOT_RENEW = (
    _NOW_MS
    + """
-- KEYS: slots.  ARGV: holder, lease ms.  Extends a lease still held (XX: never re-takes one).
local ttl = tonumber(ARGV[2])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%.0f', now + ttl), ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return renewed
"""
)

COUNTER_ADD = """
-- KEYS: counter.  ARGV: amount, ttl ms.  The ttl is set once, when the counter is created.
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return total
"""
