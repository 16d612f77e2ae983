"""The protocol of shmkit's structures on Redis: key names, value encoding and the Lua
scripts that make every compound step atomic.

This module does no I/O.  The blocking objects (``_dict``, ``_queue``, ``_sync``,
``_board``) and, later, their ``redis.asyncio`` twins send these scripts and interpret
their replies with the same helpers, so the decisions are written once.

Keys
----
Every key of object ``name`` in zone ``zone`` starts with ``shmkit:{zone/name}:``.  The
braces are a Redis Cluster *hash tag*: only the part between them picks the slot, so all
keys of one object live in one slot (one node), and a script may touch them all.  The
zone's directory is ``shmkit:{zone}:objects`` (a hash: object name -> record).

Waiting
-------
Nothing here sleeps and polls.  A process that must wait registers a *waiter id* in a
sorted set of the object (score: the deadline of this wait, in the server's
milliseconds) in the same script that found it must wait, then blocks server-side with
``BLPOP`` on its own token list ``<base>:w:<waiter id>``.  Whoever changes the state
(a put, a release, a set, a publish, the last task_done) pushes a token to the list of
every registered waiter whose deadline has not passed, in the same script.  Because
"look and register" and "change and wake" are each one atomic script, no wake-up can
fall between them.  Waiters whose deadline passed are dropped when someone wakes the set.
Times come from the server's clock (``TIME``), so clocks of clients do not matter.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from collections.abc import Callable
from typing import Any, Union

#: a reply as redis-py hands it over unparsed (no decode_responses, no callbacks on the
#: hot paths): an int, bytes, a list of replies, or None.  What a script returns is
#: written beside the script; the callers take it apart with int(), ``r[0]`` ...
Reply = Any

#: what a command or a script takes as an argument (redis-py encodes each to bytes)
Arg = Union[str, bytes, int, float]

#: how values are turned into bytes and back (``serializer.dumps``/``loads``; None: pickle);
#: a text serializer (json) returns str, stored as UTF-8
Dumps = Callable[[Any], "bytes | str"]
Loads = Callable[[bytes], Any]

# -- keys ----------------------------------------------------------------------------------

PREFIX = "shmkit:"


def zone_key(zone: str) -> str:
    """The zone's directory: a hash object name -> record."""
    return f"{PREFIX}{{{zone}}}:objects"


def object_base(zone: str, name: str) -> str:
    """The prefix of every key of one object (its hash tag is ``{zone/name}``)."""
    return f"{PREFIX}{{{zone}/{name}}}"


def glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for SCAN MATCH."""
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def zone_pattern() -> str:
    """SCAN MATCH pattern of every zone directory."""
    return f"{PREFIX}{{*}}:objects"


def zone_of_directory_key(key: bytes) -> str | None:
    k = key.decode("utf-8", "surrogateescape")
    if k.startswith(PREFIX + "{") and k.endswith("}:objects"):
        return k[len(PREFIX) + 1:-len("}:objects")]
    return None


# -- records in the zone directory ---------------------------------------------------------

def directory_record(kind: str, created_ms: int, creator: str) -> bytes:
    return f"{kind}|{created_ms}|{creator}".encode()


def parse_directory_record(raw: bytes) -> tuple[str, int, str]:
    kind, _, rest = raw.decode("utf-8", "replace").partition("|")
    created, _, creator = rest.partition("|")
    try:
        created_ms = int(created)
    except ValueError:
        created_ms = 0
    return kind, created_ms, creator


# -- values of dicts and lists ---------------------------------------------------------------
#
# An int that fits in 64 bits is stored as its decimal text, so that INCRBY works on it
# and redis-cli shows it.  Everything else starts with a tag byte below '-' (0x2d) that no
# decimal text starts with:

T_BYTES = 0
T_STR = 1
T_FLOAT = 2        # followed by the IEEE-754 binary64, little-endian (Lua's struct reads it)
T_TRUE = 3
T_FALSE = 4
T_NONE = 5
T_BIGINT = 6       # an int outside int64, decimal text
T_PICKLE = 7       # serializer.dumps(value) (pickle protocol 5 by default)
T_FLAGS = 8        # 4 bytes of flags (uint32, little-endian), then an encoded value

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_FLOAT = struct.Struct("<d")
_FLAGS = struct.Struct("<I")
_B_BYTES = b"\x00"
_B_STR = b"\x01"
_B_FLOAT = b"\x02"
_ENC_TRUE = b"\x03"
_ENC_FALSE = b"\x04"
_ENC_NONE = b"\x05"


def _pickle_dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=5)


def encode_value(value: Any, dumps: Dumps | None = None) -> bytes:
    """The bytes stored for ``value`` (its type comes back on decode)."""
    # exact type tests, not isinstance: a subclass (a bool is an int, an IntEnum ...)
    # is pickled so that it comes back as what it was.  Checkers do not follow ``t is
    # bytes``, so the two results built from ``value`` (Any) are declared bytes.
    t = type(value)
    encoded: bytes
    if t is bytes:
        encoded = _B_BYTES + value
        return encoded
    if t is str:
        try:
            encoded = _B_STR + value.encode()
            return encoded
        except UnicodeEncodeError:  # lone surrogates: through the serializer, as locally
            pass
    elif t is int:
        if INT64_MIN <= value <= INT64_MAX:
            return str(value).encode()
        return b"\x06" + str(value).encode()
    elif t is float:
        return _B_FLOAT + _FLOAT.pack(value)
    elif value is True:
        return _ENC_TRUE
    elif value is False:
        return _ENC_FALSE
    elif value is None:
        return _ENC_NONE
    data = (dumps or _pickle_dumps)(value)
    if isinstance(data, str):      # a text serializer (json): stored as UTF-8
        data = data.encode()
    return b"\x07" + data


def with_flags(encoded: bytes, flags: int) -> bytes:
    if not flags:
        return encoded
    return b"\x08" + _FLAGS.pack(flags) + encoded


def check_flags(flags: object) -> int:
    if not isinstance(flags, int) or isinstance(flags, bool) or not 0 <= flags <= 0xFFFFFFFF:
        raise ValueError(f"flags must be an int from 0 to 2**32 - 1, not {flags!r}")
    return flags


def decode_value(raw: bytes, loads: Loads | None = None) -> Any:
    """The value stored as ``raw`` (see encode_value)."""
    t = raw[0]
    if t == T_BYTES:
        return raw[1:]
    if t == T_STR:
        return raw[1:].decode()
    if t >= 0x2D:
        return int(raw)
    if t == T_FLOAT:
        return _FLOAT.unpack_from(raw, 1)[0]
    if t == T_TRUE:
        return True
    if t == T_FALSE:
        return False
    if t == T_NONE:
        return None
    if t == T_BIGINT:
        return int(raw[1:])
    if t == T_PICKLE:
        return (loads or pickle.loads)(raw[1:])
    if t == T_FLAGS:
        return decode_value(raw[5:], loads)
    from .._errors import CorruptedError
    raise CorruptedError(f"a value with an unknown type tag {t} (not written by shmkit?)")


def decode_with_flags(raw: bytes, loads: Loads | None = None) -> tuple[Any, int]:
    if raw[0] == T_FLAGS:
        flags: int = _FLAGS.unpack_from(raw, 1)[0]
        return decode_value(raw[5:], loads), flags
    return decode_value(raw, loads), 0


def float_text(x: float) -> str:
    """A float as text that Lua's tonumber reads back exactly."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("incr by NaN or an infinity")
    return repr(x)


# -- Lua scripts -----------------------------------------------------------------------------

class Script:
    """A Lua script and its SHA1 (sent with EVALSHA; EVAL once when the server lacks it)."""

    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


_PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- push a token to every waiter of set `wkey` whose deadline has not passed; forget all
local function wake_all(base, wkey, now)
  local ws = redis.call('ZRANGEBYSCORE', wkey, now, '+inf')
  for i = 1, #ws do
    local k = base .. ':w:' .. ws[i]
    redis.call('RPUSH', k, '1')
    redis.call('PEXPIRE', k, 60000)
  end
  redis.call('DEL', wkey)
  return #ws
end
-- a waiter that is done (or about to look again) leaves the set, its token list goes
local function unwait(base, wkey, wid)
  if wid ~= '' then
    redis.call('ZREM', wkey, wid)
    redis.call('DEL', base .. ':w:' .. wid)
  end
end
-- renew the leases of ARGV[3..] (members of sorted set `zkey`, scored by expiry) by
-- ARGV[2] milliseconds; returns those no longer there (their lease ran out, reclaimed)
local function renew_leases(zkey)
  local now = now_ms()
  local lost = {}
  for i = 3, #ARGV do
    if redis.call('ZSCORE', zkey, ARGV[i]) then
      redis.call('ZADD', zkey, now + tonumber(ARGV[2]), ARGV[i])
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
  return lost
end
-- register `wid` to be woken for the next `ms` milliseconds (and a second of slack);
-- waiters whose time is over (they timed out, or died) are dropped on the way
local function wait_on(wkey, wid, ms)
  if wid ~= '' then
    local now = now_ms()
    redis.call('ZREMRANGEBYSCORE', wkey, '-inf', now)
    redis.call('ZADD', wkey, now + tonumber(ms) + 1000, wid)
  end
end
"""


def _script(name: str, body: str) -> Script:
    return Script(name, _PRELUDE + body)


# what the replies of the scripts that wait (see Waiting) say, for Wait.until and its twin
def granted(r: Reply) -> bool:
    """LOCK_ACQUIRE, SEM_ACQUIRE, EVENT_WAIT: taken (or set); no need to wait."""
    return bool(r[0] == 1)


def lease_left_ms(r: Reply) -> float | None:
    """LOCK_ACQUIRE, SEM_ACQUIRE refused: how long until the holder's lease runs out (a
    waiter looks again then, the holder may be dead)."""
    hint: float | None = r[3]
    return hint


def all_done(r: Reply) -> bool:
    """QUEUE_JOIN: no unfinished task."""
    return bool(r[0] == 1)


def consumer_lease_left_ms(r: Reply) -> float | None:
    """QUEUE_JOIN, tasks unfinished: how long until the earliest consumer lease ends (-1:
    none), when a dead consumer's tasks would be reclaimed."""
    hint: float | None = r[2]
    return hint


def newer(r: Reply) -> bool:
    """BOARD_READ: a version newer than the one known (else 0: registered to wait)."""
    return bool(r[0] != 0)


# ---- Lock and RLock ------------------------------------------------------------------------
# KEYS[1] = <base>:lock  hash {owner, expires, fence, count, acquisitions, contentions,
#                             deaths, last_death_ms, last_dead}
# KEYS[2] = <base>:waiters

LOCK_ACQUIRE = _script("lock_acquire", r"""
-- ARGV: base, owner, lease_ms, reentrant, prev_wid, wid, wait_ms, first_try, nonce
-- {1, fence, owner died, 0} or {0, 0, 0, ms left on the holder's lease}.  `nonce` names
-- this acquire() call: sent again after a lost reply, it finds the lock already taken.
local base, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h = KEYS[1]
local now = now_ms()
unwait(base, KEYS[2], ARGV[5])
local cur = redis.call('HGET', h, 'owner')
local died = 0
if cur == owner and redis.call('HGET', h, 'nonce') == ARGV[9] then
  return {1, tonumber(redis.call('HGET', h, 'fence')), 0, 0}
end
if cur and cur ~= '' then
  if cur == owner and ARGV[4] == '1' then
    redis.call('HINCRBY', h, 'count', 1)
    redis.call('HSET', h, 'expires', now + lease)
    return {1, tonumber(redis.call('HGET', h, 'fence')), 0, 0}
  end
  local exp = tonumber(redis.call('HGET', h, 'expires') or '0')
  if exp > now then
    if ARGV[8] == '1' then redis.call('HINCRBY', h, 'contentions', 1) end
    wait_on(KEYS[2], ARGV[6], ARGV[7])
    return {0, 0, 0, exp - now}
  end
  died = 1
  redis.call('HINCRBY', h, 'deaths', 1)
  redis.call('HSET', h, 'last_death_ms', now, 'last_dead', cur)
end
local fence = redis.call('HINCRBY', h, 'fence', 1)
redis.call('HINCRBY', h, 'acquisitions', 1)
redis.call('HSET', h, 'owner', owner, 'expires', now + lease, 'count', 1, 'nonce', ARGV[9])
return {1, fence, died, 0}
""")

LOCK_RELEASE = _script("lock_release", r"""
-- ARGV: base, owner, reentrant.  Returns the remaining count, or -1: not the owner.
local h = KEYS[1]
local cur = redis.call('HGET', h, 'owner')
if cur ~= ARGV[2] then return -1 end
if ARGV[3] == '1' then
  local c = redis.call('HINCRBY', h, 'count', -1)
  if c > 0 then return c end
end
redis.call('HSET', h, 'owner', '', 'expires', 0, 'count', 0)
wake_all(ARGV[1], KEYS[2], now_ms())
return 0
""")

LOCK_RENEW = _script("lock_renew", r"""
-- ARGV: base, owner, lease_ms.  1: renewed; 0: the lock is no longer ours.
local h = KEYS[1]
if redis.call('HGET', h, 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', h, 'expires', now_ms() + tonumber(ARGV[3]))
return 1
""")

LOCK_STATE = _script("lock_state", r"""
-- ARGV: base.  {owner or '', ms left on the lease, fence, count, waiters, acquisitions,
--                contentions, deaths, last_death_ms, last_dead}
local h = KEYS[1]
local now = now_ms()
local v = redis.call('HMGET', h, 'owner', 'expires', 'fence', 'count', 'acquisitions',
                     'contentions', 'deaths', 'last_death_ms', 'last_dead')
local left = (tonumber(v[2] or '0') or 0) - now
local nw = redis.call('ZCOUNT', KEYS[2], now, '+inf')
return {v[1] or '', left, v[3] or '0', v[4] or '0', nw, v[5] or '0', v[6] or '0',
        v[7] or '0', v[8] or '0', v[9] or ''}
""")

# ---- Semaphore -----------------------------------------------------------------------------
# KEYS[1] = <base>:sem hash {value, initial, bounded, fence, acquisitions, contentions,
#                            reclaimed}
# KEYS[2] = <base>:holders  zset  "<owner>#<nonce>" -> lease expiry (ms)
# KEYS[3] = <base>:waiters

_SEM_COMMON = r"""
local function reclaim(h, holders, now)
  local dead = redis.call('ZRANGEBYSCORE', holders, '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
    redis.call('HINCRBY', h, 'value', #dead)
    redis.call('HINCRBY', h, 'reclaimed', #dead)
  end
  return #dead
end
"""

SEM_INIT = _script("sem_init", r"""
-- ARGV: base, initial, bounded.  {initial, bounded} of the semaphore as it exists.
local h = KEYS[1]
if redis.call('HSETNX', h, 'initial', ARGV[2]) == 1 then
  redis.call('HSET', h, 'value', ARGV[2], 'bounded', ARGV[3], 'fence', 0)
end
return {tonumber(redis.call('HGET', h, 'initial')), redis.call('HGET', h, 'bounded')}
""")

SEM_ACQUIRE = _script("sem_acquire", _SEM_COMMON + r"""
-- ARGV: base, owner, lease_ms, prev_wid, wid, wait_ms, first_try, nonce
-- {1, fence, reclaimed now, 0} or {0, 0, 0, ms until the earliest holder's lease ends}.
-- The unit is held as "<owner>#<nonce>"; sent again after a lost reply, the call finds it.
local h = KEYS[1]
local now = now_ms()
unwait(ARGV[1], KEYS[3], ARGV[4])
local unit = ARGV[2] .. '#' .. ARGV[8]
if redis.call('ZSCORE', KEYS[2], unit) then
  return {1, tonumber(redis.call('HGET', h, 'fence')), 0, 0}
end
local got = reclaim(h, KEYS[2], now)
if tonumber(redis.call('HGET', h, 'value')) > 0 then
  redis.call('HINCRBY', h, 'value', -1)
  redis.call('HINCRBY', h, 'acquisitions', 1)
  local fence = redis.call('HINCRBY', h, 'fence', 1)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), unit)
  return {1, fence, got, 0}
end
if ARGV[7] == '1' then redis.call('HINCRBY', h, 'contentions', 1) end
wait_on(KEYS[3], ARGV[5], ARGV[6])
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local left = -1
if #first > 0 then left = tonumber(first[2]) - now end
return {0, 0, got, left}
""")

SEM_RELEASE = _script("sem_release", _SEM_COMMON + r"""
-- ARGV: base, n, units of this process to give back first ("<owner>#<nonce>", ...)
-- Returns the new value, or -1: a bounded semaphore would go above its initial value.
local h = KEYS[1]
local now = now_ms()
reclaim(h, KEYS[2], now)
local n = tonumber(ARGV[2])
local mine = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then mine = mine + 1 end
end
local add = n
if redis.call('HGET', h, 'bounded') == '1' then
  local value = tonumber(redis.call('HGET', h, 'value'))
  local held = redis.call('ZCARD', KEYS[2]) - mine
  if value + held + add > tonumber(redis.call('HGET', h, 'initial')) then return -1 end
end
for i = 3, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
local v = redis.call('HINCRBY', h, 'value', add)
wake_all(ARGV[1], KEYS[3], now)
return v
""")

SEM_RENEW = _script("sem_renew", r"""
-- ARGV: base, lease_ms, units...  Returns the units that are no longer held (reclaimed).
return renew_leases(KEYS[2])
""")

SEM_STATE = _script("sem_state", _SEM_COMMON + r"""
-- ARGV: base.  {value, initial, bounded, holders, waiters, acquisitions, contentions, reclaimed}
local h = KEYS[1]
local now = now_ms()
reclaim(h, KEYS[2], now)
local v = redis.call('HMGET', h, 'value', 'initial', 'bounded', 'acquisitions', 'contentions',
                     'reclaimed')
return {v[1] or '0', v[2] or '0', v[3] or '0', redis.call('ZCARD', KEYS[2]),
        redis.call('ZCOUNT', KEYS[3], now, '+inf'), v[4] or '0', v[5] or '0', v[6] or '0'}
""")

# ---- Event ---------------------------------------------------------------------------------
# KEYS[1] = <base>:event hash {flag, sets, waits};  KEYS[2] = <base>:waiters

EVENT_SET = _script("event_set", r"""
local h = KEYS[1]
if redis.call('HGET', h, 'flag') ~= '1' then
  redis.call('HSET', h, 'flag', '1')
  redis.call('HINCRBY', h, 'sets', 1)
end
wake_all(ARGV[1], KEYS[2], now_ms())
return 1
""")

EVENT_WAIT = _script("event_wait", r"""
-- ARGV: base, prev_wid, wid, wait_ms, sets seen when the wait began ('' first time)
-- {1, sets}: set (or set and cleared again since the wait began); {0, sets}: registered
local h = KEYS[1]
unwait(ARGV[1], KEYS[2], ARGV[2])
local sets = tonumber(redis.call('HGET', h, 'sets') or '0')
if redis.call('HGET', h, 'flag') == '1' then return {1, sets} end
if ARGV[5] ~= '' and sets > tonumber(ARGV[5]) then return {1, sets} end
if ARGV[5] == '' then redis.call('HINCRBY', h, 'waits', 1) end
wait_on(KEYS[2], ARGV[3], ARGV[4])
return {0, sets}
""")

EVENT_STATE = _script("event_state", r"""
local v = redis.call('HMGET', KEYS[1], 'flag', 'sets', 'waits')
return {v[1] or '0', v[2] or '0', v[3] or '0', redis.call('ZCOUNT', KEYS[2], now_ms(), '+inf')}
""")

# ---- Counter -------------------------------------------------------------------------------
# KEYS[1] = <base>:value (an int64 as decimal text)

COUNTER_CAS = _script("counter_cas", r"""
-- ARGV: base, expected, new.  1 when swapped.
if (redis.call('GET', KEYS[1]) or '0') == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
""")

# ---- Dict ----------------------------------------------------------------------------------
# One Redis key per item: <base>:k:s:<utf-8 key> for str keys, <base>:k:b:<key> for bytes.
# KEYS[1] = the item's key.

DICT_INCR = _script("dict_incr", r"""
-- ARGV: base, step kind ('i' or 'f'), step text, init value already added to the step
--       (encoded, '' when there is no init), init ttl ms (0: none)
-- {'i', text} / {'f', 8 bytes} / {'new'} / {'missing'} / {'type'} / {'slow'}
local k = KEYS[1]
local ok, v = pcall(redis.call, 'GET', k)
if not ok then return {'type'} end
if not v then
  if ARGV[4] == '' then return {'missing'} end
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', k, ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', k, ARGV[4])
  end
  return {'new'}
end
local prefix = ''
local body = v
local t = string.byte(v, 1)
if t == 8 then
  prefix = string.sub(v, 1, 5)
  body = string.sub(v, 6)
  t = string.byte(body, 1)
end
if t == 45 or (t >= 48 and t <= 57) then
  if ARGV[2] == 'i' then
    if prefix ~= '' then return {'slow'} end
    local done, r = pcall(redis.call, 'INCRBY', k, ARGV[3])
    if not done then return {'slow'} end
    return {'i', tostring(r)}
  end
  local x = tonumber(body) + tonumber(ARGV[3])
  local enc = struct.pack('<d', x)
  redis.call('SET', k, prefix .. '\2' .. enc, 'KEEPTTL')
  return {'f', enc}
end
if t == 2 then
  local x = struct.unpack('<d', body, 2) + tonumber(ARGV[3])
  local enc = struct.pack('<d', x)
  redis.call('SET', k, prefix .. '\2' .. enc, 'KEEPTTL')
  return {'f', enc}
end
if t == 6 then return {'slow'} end
return {'type'}
""")

DICT_CAS = _script("dict_cas", r"""
-- ARGV: base, expected raw value, new raw value.  Keeps the ttl.  1 when swapped.
local ok, v = pcall(redis.call, 'GET', KEYS[1])
if ok and v == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
  return 1
end
return 0
""")

DICT_EXPIRE = _script("dict_expire", r"""
-- ARGV: base, ttl ms (0: no expiry).  1 if the key exists.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
""")

DICT_POP = _script("dict_pop", r"""
-- {} when missing; {'v', raw} for a value; {'l', raw...} for a list
local k = KEYS[1]
local t = redis.call('TYPE', k)['ok']
if t == 'none' then return {} end
if t == 'list' then
  local items = redis.call('LRANGE', k, 0, -1)
  redis.call('DEL', k)
  table.insert(items, 1, 'l')
  return items
end
return {'v', redis.call('GETDEL', k)}
""")

# ---- Board (and SharedConfig) --------------------------------------------------------------
# KEYS[1] = <base>:board hash {version, kind, value, writer, writer_expires, last_publish_ms,
#                              takeovers, max_bytes};  KEYS[2] = <base>:waiters

_BOARD_COMMON = r"""
-- 1: `owner` is (now) the writer; 0: another live writer holds the role
local function claim(h, owner, lease, now)
  local w = redis.call('HGET', h, 'writer')
  if w and w ~= '' and w ~= owner then
    if tonumber(redis.call('HGET', h, 'writer_expires') or '0') > now then return 0 end
    redis.call('HINCRBY', h, 'takeovers', 1)
  end
  redis.call('HSET', h, 'writer', owner, 'writer_expires', now + lease)
  return 1
end
"""

BOARD_INIT = _script("board_init", r"""
-- ARGV: base, max_bytes.  The max_bytes of the board as it exists.
redis.call('HSETNX', KEYS[1], 'max_bytes', ARGV[2])
redis.call('HSETNX', KEYS[1], 'version', 0)
return tonumber(redis.call('HGET', KEYS[1], 'max_bytes'))
""")

BOARD_CLAIM = _script("board_claim", _BOARD_COMMON + r"""
-- ARGV: base, owner, lease_ms.  1, or {0, writer}
local r = claim(KEYS[1], ARGV[2], tonumber(ARGV[3]), now_ms())
if r == 1 then return 1 end
return {0, redis.call('HGET', KEYS[1], 'writer')}
""")

BOARD_RELEASE = _script("board_release", r"""
if redis.call('HGET', KEYS[1], 'writer') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'writer', '', 'writer_expires', 0)
  return 1
end
return 0
""")

BOARD_PUBLISH = _script("board_publish", _BOARD_COMMON + r"""
-- ARGV: base, owner, lease_ms, kind, value.  The new version, or {0, writer}: not the writer
local h = KEYS[1]
local now = now_ms()
if claim(h, ARGV[2], tonumber(ARGV[3]), now) == 0 then
  return {0, redis.call('HGET', h, 'writer')}
end
local v = redis.call('HINCRBY', h, 'version', 1)
redis.call('HSET', h, 'kind', ARGV[4], 'value', ARGV[5], 'last_publish_ms', now)
wake_all(ARGV[1], KEYS[2], now)
return v
""")

BOARD_READ = _script("board_read", r"""
-- ARGV: base, version known, prev_wid, wid, wait_ms
-- {version, kind, value} when newer than the version known, else {0} (and registered)
local h = KEYS[1]
unwait(ARGV[1], KEYS[2], ARGV[3])
local v = tonumber(redis.call('HGET', h, 'version') or '0')
if v > tonumber(ARGV[2]) then
  local kv = redis.call('HMGET', h, 'kind', 'value')
  return {v, kv[1], kv[2]}
end
wait_on(KEYS[2], ARGV[4], ARGV[5])
return {0}
""")

BOARD_RENEW = _script("board_renew", r"""
if redis.call('HGET', KEYS[1], 'writer') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'writer_expires', now_ms() + tonumber(ARGV[3]))
return 1
""")

BOARD_STATE = _script("board_state", r"""
local now = now_ms()
local v = redis.call('HMGET', KEYS[1], 'version', 'max_bytes', 'writer', 'writer_expires',
                     'last_publish_ms', 'takeovers')
local alive = 0
if v[3] and v[3] ~= '' and tonumber(v[4] or '0') > now then alive = 1 end
return {v[1] or '0', v[2] or '0', v[3] or '', alive, v[5] or '0', v[6] or '0',
        redis.call('ZCOUNT', KEYS[2], now, '+inf'), redis.call('HSTRLEN', KEYS[1], 'value')}
""")

# ---- Queue ---------------------------------------------------------------------------------
# KEYS[1] = <base>:meta (the only key declared: every other key of the queue has the same
# hash tag, so it is in the same slot, and is derived from it in the script; fewer
# arguments on the hot path).  ARGV[1] is always the consumer id or ''.
#   <base>:meta      hash {delivery, max_messages, capacity, closed}
#   <base>:ready     list of messages not yet taken (producers RPUSH, consumers take LEFT)
#   <base>:consumers zset consumer id -> lease expiry (ms)
#   <base>:stats     hash {puts, gets, acknowledged, redeliveries, abandoned_tasks, bytes}:
#                    only totals are written; unfinished_tasks = puts - acknowledged -
#                    abandoned_tasks and in_flight = gets - acknowledged - redeliveries -
#                    abandoned_tasks are derived (bytes is kept only with a capacity)
#   <base>:joiners   waiters of join();  <base>:space  waiters of a blocked put
#   <base>:taken     hash consumer id -> tasks taken and not done (at-most-once)
#   <base>:c:<id>    at-least-once: the messages consumer <id> holds, oldest first
#   <base>:t:<id>    where its blocking BLMOVE lands (given back if it never saw them)

_QUEUE_COMMON = r"""
local META = KEYS[1]
local B = string.sub(META, 1, -6)
local READY, CONS, STATS = B .. ':ready', B .. ':consumers', B .. ':stats'
local JOINERS, SPACE, TAKEN = B .. ':joiners', B .. ':space', B .. ':taken'
-- move every element of `src` to the head of READY, keeping their order
local function give_back(src)
  local n = 0
  while redis.call('RPOPLPUSH', src, READY) do n = n + 1 end
  return n
end
local function unfinished()
  local v = redis.call('HMGET', STATS, 'puts', 'acknowledged', 'abandoned_tasks')
  return (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0) - (tonumber(v[3]) or 0)
end
-- what a consumer held goes back (at-least-once: redelivered) or is released
-- (at-most-once: its tasks count as abandoned, so join() does not wait for them)
local function release_consumer(cid, alo, now)
  give_back(B .. ':t:' .. cid)
  local m
  if alo then
    m = give_back(B .. ':c:' .. cid)
    if m > 0 then redis.call('HINCRBY', STATS, 'redeliveries', m) end
  else
    m = tonumber(redis.call('HGET', TAKEN, cid) or '0')
    redis.call('HDEL', TAKEN, cid)
    if m > 0 then
      redis.call('HINCRBY', STATS, 'abandoned_tasks', m)
      if unfinished() <= 0 then wake_all(B, JOINERS, now) end
    end
  end
  redis.call('ZREM', CONS, cid)
  return m
end
local function reclaim_expired(alo, now)
  local dead = redis.call('ZRANGEBYSCORE', CONS, '-inf', now, 'LIMIT', 0, 64)
  for i = 1, #dead do release_consumer(dead[i], alo, now) end
  return #dead
end
"""

QUEUE_INIT = _script("queue_init", _QUEUE_COMMON + r"""
-- ARGV: '', delivery, max_messages, capacity, mode.
-- {delivery, max_messages, capacity, closed, mode} (mode nil: made before it was recorded)
if redis.call('HSETNX', META, 'delivery', ARGV[2]) == 1 then
  redis.call('HSET', META, 'max_messages', ARGV[3], 'capacity', ARGV[4], 'closed', '0',
             'mode', ARGV[5])
end
return redis.call('HMGET', META, 'delivery', 'max_messages', 'capacity', 'closed', 'mode')
""")

QUEUE_PUT = _script("queue_put", _QUEUE_COMMON + r"""
-- ARGV: '', prev_wid, wid, wait_ms, items...
-- How many of the items were put (a prefix), or -1: the queue is closed.  When not all
-- fit and wid is given, the caller is registered to be woken when space frees.
if ARGV[2] ~= '' then unwait(B, SPACE, ARGV[2]) end
local meta = redis.call('HMGET', META, 'closed', 'max_messages', 'capacity', 'delivery')
if meta[1] == '1' then return -1 end
local maxm = tonumber(meta[2] or '0')
local cap = tonumber(meta[3] or '0')
local n = #ARGV - 4
local k = n
if maxm > 0 or cap > 0 then
  local depth = redis.call('LLEN', READY)
  if maxm > 0 and meta[4] == 'at-least-once' then
    local v = redis.call('HMGET', STATS, 'gets', 'acknowledged', 'redeliveries', 'abandoned_tasks')
    depth = depth + (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0) - (tonumber(v[3]) or 0)
            - (tonumber(v[4]) or 0)
  end
  local used = tonumber(redis.call('HGET', STATS, 'bytes') or '0')
  local bytes = 0
  k = 0
  for i = 5, #ARGV do
    local len = #ARGV[i]
    if (maxm > 0 and depth + 1 > maxm) or (cap > 0 and used + len > cap) then break end
    depth = depth + 1
    used = used + len
    bytes = bytes + len
    k = k + 1
  end
  if cap > 0 and bytes > 0 then redis.call('HINCRBY', STATS, 'bytes', bytes) end
end
local i = 5
while i < 5 + k do
  local j = math.min(i + 999, 4 + k)
  redis.call('RPUSH', READY, unpack(ARGV, i, j))
  i = j + 1
end
if k > 0 then redis.call('HINCRBY', STATS, 'puts', k) end
if k < n then wait_on(SPACE, ARGV[3], ARGV[4]) end
return k
""")

QUEUE_TAKE = _script("queue_take", _QUEUE_COMMON + r"""
-- ARGV: consumer id, lease_ms, max messages, max bytes (0: any), '1' to look in the
-- consumer's BLMOVE landing list first, '1' to (re)register the consumer's lease (the
-- zone's renewer keeps it up afterwards)
-- {n, message...}; {0}: nothing there; {-1}: closed and drained
local now = now_ms()
local meta = redis.call('HMGET', META, 'delivery', 'max_messages', 'capacity', 'next_reclaim')
local alo = meta[1] == 'at-least-once'
local bounded = (tonumber(meta[2] or '0') > 0) or (tonumber(meta[3] or '0') > 0)
local cid = ARGV[1]
-- looking for expired consumers on every take would cost a command each; 5 times a
-- second is enough (join and statistics look every time)
if now >= (tonumber(meta[4]) or 0) then
  reclaim_expired(alo, now)
  redis.call('HSET', META, 'next_reclaim', now + 200)
end
if ARGV[6] == '1' then redis.call('ZADD', CONS, now + tonumber(ARGV[2]), cid) end
local max_n = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local held = B .. ':c:' .. cid
local out = {0}
local total = 0
local full = false
local srcs = {READY}
if ARGV[5] == '1' then srcs = {B .. ':t:' .. cid, READY} end
for _, src in ipairs(srcs) do
  while not full and #out <= max_n do
    local v
    if alo then v = redis.call('LMOVE', src, held, 'LEFT', 'RIGHT')
    else v = redis.call('LPOP', src) end
    if not v then break end
    if max_bytes > 0 and #out > 1 and total + #v > max_bytes then
      if alo then redis.call('LMOVE', held, src, 'RIGHT', 'LEFT')
      else redis.call('LPUSH', src, v) end
      full = true
    else
      out[#out + 1] = v
      total = total + #v
    end
  end
end
local n = #out - 1
if n == 0 then
  if redis.call('HGET', META, 'closed') == '1' then return {-1} end
  return out
end
out[1] = n
redis.call('HINCRBY', STATS, 'gets', n)
if not alo then
  redis.call('HINCRBY', TAKEN, cid, n)
  if bounded then
    if tonumber(meta[3] or '0') > 0 then redis.call('HINCRBY', STATS, 'bytes', -total) end
    wake_all(B, SPACE, now)
  end
end
return out
""")

QUEUE_TASK_DONE = _script("queue_task_done", _QUEUE_COMMON + r"""
-- ARGV: consumer id, count, lease_ms
-- {0, unfinished}; {-1, outstanding}: fewer than count outstanding; {-2}: not registered
local now = now_ms()
local cid = ARGV[1]
local count = tonumber(ARGV[2])
if not redis.call('ZSCORE', CONS, cid) then return {-2} end
local meta = redis.call('HMGET', META, 'delivery', 'max_messages', 'capacity')
if meta[1] == 'at-least-once' then
  local held = B .. ':c:' .. cid
  local l = redis.call('LLEN', held)
  if l < count then return {-1, l} end
  if tonumber(meta[3] or '0') > 0 then
    local bytes = 0
    for i = 1, count do bytes = bytes + #redis.call('LPOP', held) end
    redis.call('HINCRBY', STATS, 'bytes', -bytes)
  else
    redis.call('LPOP', held, count)
  end
  if tonumber(meta[2] or '0') > 0 or tonumber(meta[3] or '0') > 0 then
    wake_all(B, SPACE, now)
  end
else
  local t = tonumber(redis.call('HGET', TAKEN, cid) or '0')
  if t < count then return {-1, t} end
  if t == count then redis.call('HDEL', TAKEN, cid)
  else redis.call('HINCRBY', TAKEN, cid, -count) end
end
redis.call('HINCRBY', STATS, 'acknowledged', count)
local u = unfinished()
if u <= 0 then wake_all(B, JOINERS, now) end
redis.call('ZADD', CONS, now + tonumber(ARGV[3]), cid)
return {0, u}
""")

QUEUE_JOIN = _script("queue_join", _QUEUE_COMMON + r"""
-- ARGV: '', prev_wid, wid, wait_ms
-- {1}: no unfinished task; {0, unfinished, ms until the earliest consumer lease ends or -1}
local now = now_ms()
unwait(B, JOINERS, ARGV[2])
reclaim_expired(redis.call('HGET', META, 'delivery') == 'at-least-once', now)
local u = unfinished()
if u <= 0 then return {1} end
wait_on(JOINERS, ARGV[3], ARGV[4])
local first = redis.call('ZRANGE', CONS, 0, 0, 'WITHSCORES')
local left = -1
if #first > 0 then left = tonumber(first[2]) - now end
return {0, u, left}
""")

QUEUE_DETACH = _script("queue_detach", _QUEUE_COMMON + r"""
-- ARGV: consumer id.  How many messages went back / tasks were released.
return release_consumer(ARGV[1], redis.call('HGET', META, 'delivery') == 'at-least-once',
                        now_ms())
""")

QUEUE_RENEW = _script("queue_renew", _QUEUE_COMMON + r"""
-- ARGV: '', lease_ms, consumer ids...  The ids that are no longer registered.
return renew_leases(CONS)
""")

QUEUE_STATE = _script("queue_state", _QUEUE_COMMON + r"""
-- ARGV: ''.  Reclaims what expired consumers held, then
-- {depth, closed, consumers, stats as a flat list of field, value}
local now = now_ms()
reclaim_expired(redis.call('HGET', META, 'delivery') == 'at-least-once', now)
return {redis.call('LLEN', READY), redis.call('HGET', META, 'closed') or '0',
        redis.call('ZCARD', CONS), redis.call('HGETALL', STATS)}
""")

QUEUE_CLOSE = _script("queue_close", _QUEUE_COMMON + r"""
-- ARGV: '', '1' to close, '0' to reopen
redis.call('HSET', META, 'closed', ARGV[2])
if ARGV[2] == '1' then wake_all(B, SPACE, now_ms()) end
return 1
""")

ALL_SCRIPTS = [v for v in list(globals().values()) if isinstance(v, Script)]
