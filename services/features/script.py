"""The streaming update: one Lua script per view, applied atomically to a run of events.

The script is generated from the view (its windows and fields baked in as a Lua
table), so a call carries only the events: ``KEYS`` and ``ARGV`` hold, event after
event, the keys and arguments of each (fixed strides). Events are applied in the
order given, exactly as if each had its own call. Per event it:

1. refuses an event older than the entity's watermark ``T`` minus the lateness
   (``LATE``), and one whose id it has already applied (``DUPLICATE``; the ids live
   in a sorted set by event time, trimmed to the lateness horizon, since an older
   duplicate is refused as late anyway);
2. adds the event to its bucket in every window that still holds it, and to the
   distinct-value sets and the last-two-events record.

Each entity's window state is one msgpack map (format 2): the watermark ``t``, per
window a flat array of bucket records (bucket number, event count, per numeric field
count, sum, sum of squares, min, max) in bucket order, the inline ids as a msgpack
stream of (id, time) pairs searched as bytes, per distinct field a flat array of
(value, latest time) pairs, and the last two events. Flat arrays keep decoding and
encoding to a few tables per entity (a table per bucket, by bucket number, was a third
of the script's instructions); a state of the previous format is read and rewritten in
this one. The state is a field of the entity's online hash (``s``, beside ``v`` and ``t``
of :mod:`shared.online`): it is read once per call and written once at its end by the same
command as every feature recomputed as of ``T`` from the buckets (see
:mod:`services.features.windows` for the maths), every key's TTL refreshed. So a run of
events for one hot entity costs one read and one write (plus the TTL), and the per-call
overhead on both sides is paid once per run instead of once per event.

Keys per (view, entity): the online hash ``<ns>:fv:<view>:{<entity>}`` (its state field
also holds the applied ids and the distinct-count values while there are at most
:data:`INLINE_MAX` of each), ``<ns>:fs:<view>:{<entity>}:ids`` (applied ids) and
``...:d:<field>`` (value -> latest time, for distinct counts), sorted sets used once an
entity has more. ``...:w`` is where the state had a key of its own: a state found there
(the hash without its state field) is read once and moved into the hash. One entity's
keys share its hash tag; a call spans the entities of its events, so it needs them on
one Redis (a primary, as ``shared.online.open_redis`` connects to).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from services.features.views import Agg, Feature, FeatureView, Window, categorical, numeric
from shared.online import AS_OF_FIELD, STATE_FIELD, VALUES_FIELD, feature_key
from shared.subjects import Names


class Outcome(IntEnum):
    APPLIED = 0
    DUPLICATE = 1
    LATE = 2
    FAILED = 3  # the call raised for this event (never returned by the script itself)


_BODY = r"""
local NF, ND = #SPEC.fields, #SPEC.distinct
local SK, SA = 3 + ND, 2 + NF + ND
local W = SPEC.windows
local NW = #W
-- a bucket's record in a window's flat array: its number, its event count, then per numeric field
-- count, sum, sum of squares, min, max
local R = 2 + 5 * NF
local LATENESS, TTL, INLINE_MAX = SPEC.lateness, SPEC.ttl, SPEC.inline_max
-- numbers go to redis.call as text: a Lua number would be formatted there (%.14g) at every call
local TTL_TEXT = string.format('%d', TTL)
local FORMAT = 2
local seen, order, codes, xs = {}, {}, {}, {}
local DISTINCT = SPEC.distinct
-- Scratch tables reused from entity to entity within the call (every slot is written before
-- it is read), instead of new ones grown slot by slot for every entity: the window totals, the
-- distinct counts, the window starts. KV (generated) holds, for every feature in the view's order,
-- its name as msgpack, the msgpack float64 marker and its value: each value slot is set at every write.
local agg, totals, distinct, starts = {}, {}, {}, {}

-- The first instant of window w = {bucket ms b, buckets n, (n - 1) * b} as of T: its oldest
-- bucket's start, floor(T / b) * b - (n - 1) * b. Bucket arithmetic is written with % (floored in
-- Lua, so T - T % b is floor(T / b) * b, exactly, for the integer times used): no C call.
local function window_start(w, T)
  return T - T % w[1] - w[3]
end

-- the lowest first-instant among a distinct field's windows as of T
local function lowest_start(spec, T)
  local lowest = window_start(spec[1], T)
  for f = 2, #spec do
    local start = window_start(spec[f], T)
    if start < lowest then lowest = start end
  end
  return lowest
end

-- A state of format 1 (one msgpack map: buckets as one table each, by bucket number, ids and
-- distinct values as maps), or of the format before it (ids and values always in sorted sets).
local function upgrade(old)
  local st = {f = FORMAT, t = old.t, l1 = old.l1, l2 = old.l2, b = {}, d = {}, ds = {}}
  for i = 1, NW do
    local buckets, numbers, flat = (old.b or {})[i] or {}, {}, {}
    for k in pairs(buckets) do numbers[#numbers + 1] = k end
    table.sort(numbers)
    for _, k in ipairs(numbers) do
      flat[#flat + 1] = k
      for q = 1, R - 1 do flat[#flat + 1] = buckets[k][q] end
    end
    st.b[i] = flat
  end
  if old.i then
    local pieces = {}
    for id, at in pairs(old.i) do pieces[#pieces + 1] = cmsgpack.pack(id, at) end
    st.i, st.n = table.concat(pieces), #pieces
  end
  for d = 1, ND do
    local flat = {}
    st.ds[d] = (not old.ds) or old.ds[d] == true
    if not st.ds[d] then
      for value, at in pairs(old.d[d] or {}) do flat[#flat + 1] = value; flat[#flat + 1] = at end
    end
    st.d[d] = flat
  end
  return st
end

-- Applied ids live in the state string while an entity has few of them (at most INLINE_MAX,
-- counted in st.n) and in their own sorted set once it has more (st.i is then nil), so the common
-- sparse entity costs no sorted-set commands. Inline, st.i is a msgpack stream of (id, time) pairs,
-- searched as bytes (an id that is there appears as its own msgpack string) and decoded only when
-- the bytes match; this call's new ids wait in ent.added (a set) and ent.pieces (their msgpack)
-- until the write.
local function applied_before(ent, id, ts, ts_text)
  local st = ent.st
  if not st.i then return redis.call('ZADD', KEYS[ent.kb + 2], 'NX', ts_text, id) == 0 end
  local added = ent.added
  if added and added[id] then return true end
  if st.n > 0 and string.find(st.i, cmsgpack.pack(id), 1, true) then
    local known = {cmsgpack.unpack(st.i)}
    for k = 1, #known, 2 do
      if known[k] == id then return true end
    end
  end
  if not added then added = {}; ent.added = added; ent.pieces = {} end
  added[id] = true
  ent.pieces[#ent.pieces + 1] = cmsgpack.pack(id, ts)
  return false
end

-- At the write: the inline ids with this call's added, the ones past the lateness dropped once
-- there are more than INLINE_MAX (an older event is refused as late before its id is looked at),
-- and all of them moved to the sorted set if that still leaves too many.
local function write_ids(ent, T, advanced)
  local st, kb = ent.st, ent.kb
  if not st.i then
    if advanced then
      redis.call('ZREMRANGEBYSCORE', KEYS[kb + 2], '-inf', '(' .. string.format('%.17g', T - LATENESS))
    end
    redis.call('PEXPIRE', KEYS[kb + 2], TTL_TEXT)
    return
  end
  local pieces = ent.pieces
  if not pieces then return end  -- no id added: the inline ones are as they were
  local n = st.n + #pieces
  st.i = st.i .. table.concat(pieces)
  if n <= INLINE_MAX then st.n = n; return end
  local known, kept = {cmsgpack.unpack(st.i)}, {}
  for k = 1, #known, 2 do
    if known[k + 1] >= T - LATENESS then kept[#kept + 1] = known[k]; kept[#kept + 1] = known[k + 1] end
  end
  n = #kept / 2
  if n <= INLINE_MAX then
    st.n = n
    st.i = n > 0 and cmsgpack.pack(unpack(kept)) or ''
    return
  end
  local args = {}
  for k = 1, #kept, 2 do args[k] = kept[k + 1]; args[k + 1] = kept[k] end
  redis.call('ZADD', KEYS[kb + 2], 'NX', unpack(args))
  redis.call('PEXPIRE', KEYS[kb + 2], TTL_TEXT)
  st.i, st.n = nil, nil
end

--PACK--
--TOTALS--
for e = 0, #ARGV / SA - 1 do
  local kb, ab = e * SK, e * SA
  local S = KEYS[kb + 1]
  local ent = seen[S]
  if not ent then
    -- the state is a field of the online hash; an entity last written while it had a key of
    -- its own (S) has the hash without the field, and its state is read from there once
    local fields = redis.call('HMGET', KEYS[kb + 3], SPEC.state, SPEC.as_of)
    local raw, moved = fields[1], false
    if not raw and fields[2] then
      raw = redis.call('GET', S)
      moved = raw and true
    end
    local st
    if raw then
      st = cmsgpack.unpack(raw)
      if st.f ~= FORMAT then st = upgrade(st) end
    else
      st = {f = FORMAT, b = {}, i = '', n = 0, d = {}, ds = {}}
      for i = 1, NW do st.b[i] = {} end
      for d = 1, ND do st.d[d] = {}; st.ds[d] = false end
    end
    ent = {kb = kb, st = st, oldT = st.t, dirty = false, moved = moved}
    seen[S] = ent
    order[#order + 1] = ent
  end
  local st = ent.st
  local id, ts_text = ARGV[ab + 1], ARGV[ab + 2]
  local ts = tonumber(ts_text)
  local T = st.t
  if T and ts < T - LATENESS then
    codes[e + 1] = 2
  elseif applied_before(ent, id, ts, ts_text) then
    codes[e + 1] = 1
  else
    codes[e + 1] = 0
    ent.dirty = true
    if (not T) or ts > T then T = ts; st.t = ts; ent.T_text = ts_text end
    for j = 1, NF do
      local raw = ARGV[ab + 2 + j]
      xs[j] = raw ~= '' and tonumber(raw)  -- false: the event lacks the field
    end
    for i = 1, NW do
      local w = W[i]
      local b = w[1]
      local bno = (ts - ts % b) / b
      if bno > (T - T % b) / b - w[2] then
        -- a window's records are in bucket order: look for the bucket from the newest back
        local bs = st.b[i]
        local n = #bs
        local k = n + 1 - R
        while k > 0 and bs[k] > bno do k = k - R end
        if k < 1 or bs[k] ~= bno then
          -- a new bucket after record k: at the end, unless the event came out of order
          local at = k + R
          for q = n, at, -1 do bs[q + R] = bs[q] end
          bs[at] = bno
          for q = at + 1, at + R - 1 do bs[q] = 0 end
          k = at
        end
        bs[k + 1] = bs[k + 1] + 1
        for j = 1, NF do
          local x = xs[j]
          if x then
            local o = k + 2 + (j - 1) * 5
            if bs[o] == 0 then bs[o + 3] = x; bs[o + 4] = x
            else
              if x < bs[o + 3] then bs[o + 3] = x end
              if x > bs[o + 4] then bs[o + 4] = x end
            end
            bs[o] = bs[o] + 1
            bs[o + 1] = bs[o + 1] + x
            bs[o + 2] = bs[o + 2] + x * x
          end
        end
      end
    end
    for d = 1, ND do
      local spec = DISTINCT[d]
      -- value -> its latest event time: a value is in a window as of T when its latest
      -- time is at or after the window's first instant
      local value = ARGV[ab + 2 + NF + d]
      if value ~= '' and ts >= lowest_start(spec, T) then
        if st.ds[d] then
          redis.call('ZADD', KEYS[kb + 3 + d], 'GT', ts_text, value)
        else
          local pairs_ = st.d[d]  -- value, latest time, value, ...
          local n = #pairs_
          local k = 1
          while k < n and pairs_[k] ~= value do k = k + 2 end
          if k < n then
            if ts > pairs_[k + 1] then pairs_[k + 1] = ts end
          else
            pairs_[n + 1] = value; pairs_[n + 2] = ts
          end
        end
      end
    end
    if SPEC.recency then
      local new = {ts}
      for j = 1, NF do new[1 + j] = ARGV[ab + 2 + j] end
      if (not st.l1) or ts >= st.l1[1] then st.l2 = st.l1; st.l1 = new
      elseif (not st.l2) or ts >= st.l2[1] then st.l2 = new end
    end
  end
end

for position = 1, #order do
  local ent = order[position]
  if ent.dirty then
    local st, kb = ent.st, ent.kb
    local T = st.t
    local advanced = (not ent.oldT) or T > ent.oldT
    write_ids(ent, T, advanced)
    for i = 1, NW do
      local w = W[i]
      local b = w[1]
      local lo = (T - T % b) / b - w[2] + 1
      local bs = st.b[i]
      local n = #bs
      -- records are in bucket order: the slid-out ones are a prefix
      local drop = 0
      while drop < n and bs[drop + 1] < lo do drop = drop + R end
      if drop > 0 then
        for q = 1, n - drop do bs[q] = bs[q + drop] end
        for q = n - drop + 1, n do bs[q] = nil end
        n = n - drop
      end
      if n == R then
        agg[i] = bs  -- one bucket: its record is the window's total (read only below)
      else
        local total = totals[i]
        if not total then total = {}; totals[i] = total end
        window_totals(bs, n, total)
        agg[i] = total
      end
    end
    for d = 1, ND do
      local spec = DISTINCT[d]
      local counts = distinct[d]
      if not counts then counts = {}; distinct[d] = counts end
      local D = KEYS[kb + 3 + d]
      if st.ds[d] then
        if advanced then
          redis.call('ZREMRANGEBYSCORE', D, '-inf', '(' .. string.format('%d', lowest_start(spec, T)))
        end
        for f = 1, #spec do
          counts[f] = redis.call('ZCOUNT', D, string.format('%d', window_start(spec[f], T)), '+inf')
        end
        redis.call('PEXPIRE', D, TTL_TEXT)
      else
        -- drop the values older than every window, count the rest, and move them to the sorted
        -- set if more than INLINE_MAX are left
        local pairs_ = st.d[d]
        local n = #pairs_
        local lowest = lowest_start(spec, T)
        for f = 1, #spec do
          starts[f] = window_start(spec[f], T)
          counts[f] = 0
        end
        local kept = 0
        for k = 1, n, 2 do
          local at = pairs_[k + 1]
          if at >= lowest then
            pairs_[kept + 1] = pairs_[k]; pairs_[kept + 2] = at
            kept = kept + 2
            for f = 1, #spec do
              if at >= starts[f] then counts[f] = counts[f] + 1 end
            end
          end
        end
        for k = kept + 1, n do pairs_[k] = nil end
        if kept / 2 > INLINE_MAX then
          local args = {}
          for k = 1, kept, 2 do args[k] = pairs_[k + 1]; args[k + 1] = pairs_[k] end
          redis.call('ZADD', D, 'GT', unpack(args))
          redis.call('PEXPIRE', D, TTL_TEXT)
          st.d[d], st.ds[d] = {}, true
        end
      end
    end
    local l1, l2 = st.l1, st.l2
    local Ts = ent.T_text or string.format('%d', T)
--FEATURES--
    local O = KEYS[kb + 3]
    redis.call('HSET', O, SPEC.values, pack_features(), SPEC.as_of, Ts, SPEC.state, cmsgpack.pack(st))
    redis.call('PEXPIRE', O, TTL_TEXT)
    if ent.moved then redis.call('DEL', KEYS[kb + 1]) end
  end
end
-- the server's clock as the call ends: a script runs atomically, so from this instant on every
-- reader sees what it wrote (the moment its events became visible online)
return {codes, redis.call('TIME')}
"""


def _lua(value: Any) -> str:
    """A Python value as a Lua literal (numbers, strings, booleans, None, lists)."""
    if value is None or value is False:
        return "false"
    if value is True:
        return "true"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of ASCII names is a valid Lua string
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_lua(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


# An entity's applied ids (within the lateness) and a distinct-count field's values (within the
# widest window) stay inside its state string up to this many, and move to a sorted set beyond.
INLINE_MAX = 64


def _window(window: Window) -> tuple[int, int, int]:
    """A window as the script takes it: bucket ms, buckets, and the span from the oldest bucket's
    start to the newest's."""
    return (window.bucket_ms, window.buckets, (window.buckets - 1) * window.bucket_ms)


# A numeric field's statistics in a bucket record or a window's total, after the record's bucket
# number and event count: count, sum, sum of squares, min, max, at these offsets from the field's first.
_COUNT, _SUM, _SQUARES, _MIN, _MAX = range(5)

# The Lua locals a window's total is summed in, by statistic.
_TOTAL_LOCALS = {_COUNT: "c", _SUM: "s", _SQUARES: "q", _MIN: "lo", _MAX: "hi"}

# The statistics of its field a bucketed feature reads from a window's total (its count always).
_STATISTICS_READ: dict[Agg, set[int]] = {
    Agg.COUNT: {_COUNT},
    Agg.SUM: {_COUNT, _SUM},
    Agg.MEAN: {_COUNT, _SUM},
    Agg.MIN: {_COUNT, _MIN},
    Agg.MAX: {_COUNT, _MAX},
    Agg.STDDEV: {_COUNT, _SUM, _SQUARES},
}


def _field_offset(j: int) -> int:
    """Where numeric field ``j`` (from 0) starts in a bucket record or a window's total."""
    return 3 + 5 * j


def _feature_lua(feature: Feature, slot: int, view: FeatureView, distinct_position: tuple[int, int]) -> str:
    """Lua that sets ``KV[slot]`` to the feature's value as of ``T``, its default when nothing counts.

    It reads ``agg[i]`` (window ``i``'s total: event count at 2, then per numeric field the five
    statistics), ``distinct[d][k]`` (distinct field ``d``'s count over its ``k``-th window), and
    ``l1``/``l2`` (the latest event and the one before: time, then the raw numeric fields).
    """
    default = _lua(feature.default)
    out = f"KV[{slot}]"
    if feature.agg == Agg.DISTINCT_COUNT:
        d, k = distinct_position
        return f"do local c = distinct[{d}][{k}]; {out} = c > 0 and c or {default} end"
    if feature.agg == Agg.LAST:
        assert feature.field is not None
        j = view.numeric_fields.index(feature.field) + 2
        return f"do local raw = l1[{j}]; {out} = raw ~= '' and tonumber(raw) or {default} end"
    if feature.agg == Agg.TIME_SINCE_LAST:
        w = feature.window
        inside = "" if w is None else f" and l2[1] >= T - T % {w.bucket_ms} - {(w.buckets - 1) * w.bucket_ms}"
        return f"if l2{inside} then {out} = l1[1] - l2[1] else {out} = {default} end"
    assert feature.window is not None
    i = view.windows.index(feature.window) + 1
    if feature.agg == Agg.COUNT and feature.field is None:
        return f"do local c = agg[{i}][2]; {out} = c > 0 and c or {default} end"
    assert feature.field is not None
    o = _field_offset(view.numeric_fields.index(feature.field))
    head = f"do local t = agg[{i}]; local c = t[{o + _COUNT}]; if c > 0 then "
    value = {
        Agg.COUNT: "c",
        Agg.SUM: f"t[{o + _SUM}]",
        Agg.MEAN: f"t[{o + _SUM}] / c",
        Agg.MIN: f"t[{o + _MIN}]",
        Agg.MAX: f"t[{o + _MAX}]",
    }.get(feature.agg)
    if value is None:  # stddev: population, sqrt(max(0, E[x^2] - E[x]^2))
        assert feature.agg == Agg.STDDEV
        return (
            f"{head}local m = t[{o + _SUM}] / c; local v = t[{o + _SQUARES}] / c - m * m; if v < 0 then v = 0 end; "
            f"{out} = math.sqrt(v) else {out} = {default} end end"
        )
    return f"{head}{out} = {value} else {out} = {default} end end"


def _totals_lua(view: FeatureView) -> str:
    """Lua for ``window_totals(bs, n, total)``: a window's total over its ``n`` slots of bucket
    records into ``total`` (event count at 2, then per numeric field its statistics, as a record).

    Generated for the view: per numeric field one pass over the records, summing in locals (a
    register each, where the slots of a table cost a lookup per access), and only the statistics
    its features read (the slots of the others are left as they were: nothing reads them). Records
    are summed in bucket order, so equal states give bit-equal features.
    """
    read: dict[str, set[int]] = {name: set() for name in view.numeric_fields}
    for feature in view.features:
        if feature.field in read and feature.agg in _STATISTICS_READ:
            read[feature.field] |= _STATISTICS_READ[feature.agg]
    lines = [
        "local function window_totals(bs, n, total)",
        "  local e = 0",
        "  for k = 2, n, R do e = e + bs[k] end",
        "  total[2] = e",
    ]
    for j, name in enumerate(view.numeric_fields):
        stats = read[name]
        if not stats:
            continue  # read by `last` only, off the latest event
        o = _field_offset(j)  # the field's count is slot o of a record: k steps from one record's to the next's
        body = ["      c = c + x"]
        if _SUM in stats:
            body.append(f"      s = s + bs[k + {_SUM}]")
        if _SQUARES in stats:
            body.append(f"      q = q + bs[k + {_SQUARES}]")
        if _MIN in stats:
            body.insert(0, f"      local least = bs[k + {_MIN}]; if c == 0 or least < lo then lo = least end")
        if _MAX in stats:
            body.insert(0, f"      local most = bs[k + {_MAX}]; if c == 0 or most > hi then hi = most end")
        kept = [stat for stat in _TOTAL_LOCALS if stat in stats]
        stored = ", ".join(f"total[{o + stat}]" for stat in kept)
        values = ", ".join(_TOTAL_LOCALS[stat] for stat in kept)
        lines += [
            f"  do  -- {name}",
            "    local c, s, q, lo, hi = 0, 0, 0, 0, 0",
            f"    for k = {o}, n, R do",
            "      local x = bs[k]",
            "      if x > 0 then",
            *["  " + line for line in body],
            "      end",
            "    end",
            f"    {stored} = {values}",
            "  end",
        ]
    return "\n".join([*lines, "end"]) + "\n"


def _lua_bytes(data: bytes) -> str:
    """``data`` as a Lua string literal, every byte a three-digit decimal escape."""
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


_FLOAT64 = 0xCB  # msgpack's marker of a float64 (8 bytes, big-endian, follow)

# Features packed by one struct.pack call (three arguments each, within what Lua passes to a call).
_FEATURES_PER_PACK = 600


def _pack_features_lua(view: FeatureView) -> str:
    """Lua for ``pack_features()``: the feature map in msgpack, from KV.

    One ``struct.pack`` per up to :data:`_FEATURES_PER_PACK` features, its format generated from the
    names' lengths: each name's msgpack bytes as they are (``cN``), the float64 marker (``B``) and the
    value as a big-endian double (``d``), so the map is made in one C call and one string. cmsgpack
    made a Lua string of every name and value it was given, then concatenated them (56k of the
    716k instructions per bench event went to packing the three views' maps).
    """
    parts = []
    features = view.features
    for first in range(0, len(features), _FEATURES_PER_PACK):
        chunk = features[first : first + _FEATURES_PER_PACK]
        format_ = ">" + "".join(f"c{len(msgpack.packb(feature.name))}Bd" for feature in chunk)
        parts.append(f"struct.pack('{format_}', unpack(KV, {3 * first + 1}, {3 * (first + len(chunk))}))")
    return "local function pack_features()\n  return MAP_HEADER .. " + " .. ".join(parts) + "\nend\n\n"


def _msgpack_map_header(n: int) -> str:
    """A Lua expression for the msgpack header of a map of ``n`` entries."""
    if n <= 15:
        return f"string.char({0x80 + n})"
    if n <= 0xFFFF:
        return f"string.char(222, {n >> 8}, {n & 0xFF})"
    return f"string.char(223, {n >> 24}, {(n >> 16) & 0xFF}, {(n >> 8) & 0xFF}, {n & 0xFF})"


def render_lua(view: FeatureView, *, inline_max: int = INLINE_MAX) -> str:
    """The view's script: a ``SPEC`` table, the feature map's names, then the generic body with one
    generated line per feature (no per-feature dispatch at run time)."""
    distinct_fields = view.distinct_fields
    distinct_windows: list[list[tuple[int, int, int]]] = [[] for _ in distinct_fields]
    lines = []
    for q, feature in enumerate(view.features):
        position = (0, 0)
        if feature.agg == Agg.DISTINCT_COUNT:
            assert feature.field is not None and feature.window is not None
            d = distinct_fields.index(feature.field)
            distinct_windows[d].append(_window(feature.window))
            position = (d + 1, len(distinct_windows[d]))
        lines.append("    " + _feature_lua(feature, 3 * q + 3, view, position))
    spec = {
        "lateness": view.lateness_ms,
        "ttl": view.ttl_ms,
        "fields": list(view.numeric_fields),
        "windows": [_window(w) for w in view.windows],
        "distinct": distinct_windows,
        "recency": any(f.agg in (Agg.LAST, Agg.TIME_SINCE_LAST) for f in view.features),
        "values": VALUES_FIELD,
        "as_of": AS_OF_FIELD,
        "state": STATE_FIELD,
        "inline_max": inline_max,
    }
    kv = ", ".join(f"{_lua_bytes(msgpack.packb(feature.name))}, {_FLOAT64}, 0" for feature in view.features)
    body = (
        _BODY.replace("--FEATURES--\n", "\n".join(lines) + "\n")
        .replace("--PACK--\n", _pack_features_lua(view))
        .replace("--TOTALS--\n", _totals_lua(view))
    )
    return (
        f"-- rtml features view {view.name} v{view.version}\nlocal SPEC = {_lua(spec)}\n"
        f"local KV = {{{kv}}}\nlocal MAP_HEADER = {_msgpack_map_header(len(view.features))}\n{body}"
    )


def state_key(names: Names, view: str, entity: str) -> str:
    """``<ns>:fs:<view>:{<entity>}``: the prefix of the entity's window state keys in one view."""
    return names.redis_key("fs", view, "{" + entity + "}")


def _number_arg(value: Any) -> str:
    """A numeric field as the script reads it: ``repr`` of the float, ``""`` when not a finite number."""
    if type(value) is float:  # the common cases first, without numeric()'s isinstance checks
        return repr(value) if math.isfinite(value) else ""
    if type(value) is int:
        return repr(float(value))
    x = numeric(value)
    return "" if x is None else repr(x)


# (entity, event id, event time ms, data): one event as a view's script takes it
EntityEvent = tuple[str, str, int, Mapping[str, Any]]

# One call applies at most this many events: a call holds Redis for its whole run (about
# 10-30 us per event), so the bound keeps other clients' commands (inference's reads)
# from waiting behind more than a millisecond or so of it.
EVENTS_PER_CALL = 48


class ViewScript:
    """One view's registered script and how to call it for a run of events."""

    def __init__(
        self, client: aioredis.Redis, names: Names, view: FeatureView, *, inline_max: int = INLINE_MAX
    ) -> None:
        self.view = view
        self.names = names
        self.script: AsyncScript = client.register_script(render_lua(view, inline_max=inline_max))
        self._fields = view.numeric_fields
        self._distinct = view.distinct_fields
        # the key layout's text around the entity, so a call's keys are three concatenations each
        self._state_head = state_key(names, view.name, "")[:-1]
        self._online_head = feature_key(names, view.name, "")[:-1]
        self._distinct_tails = tuple(f"}}:d:{name}" for name in self._distinct)

    def call_args(self, events: Sequence[EntityEvent]) -> tuple[list[str], list[str]]:
        """Keys and arguments of one call over ``(entity, event id, ts, data)`` items, in order."""
        keys: list[str] = []
        args: list[str] = []
        state_head, online_head, distinct_tails = self._state_head, self._online_head, self._distinct_tails
        fields, distinct = self._fields, self._distinct
        for entity, event_id, ts, data in events:
            state = state_head + entity
            keys += (state + "}:w", state + "}:ids", online_head + entity + "}")
            for tail in distinct_tails:
                keys.append(state + tail)
            args += (event_id, str(int(ts)))
            for name in fields:
                args.append(_number_arg(data.get(name)))
            for name in distinct:
                args.append(categorical(data.get(name)) or "")
        return keys, args

    async def load(self, client: aioredis.Redis) -> None:
        await client.script_load(self.script.script)


class ScriptCall:
    """One call of a view's script over a run of events, its keys and arguments built up front."""

    __slots__ = ("args", "events", "keys", "script")

    def __init__(self, script: ViewScript, events: Sequence[EntityEvent]) -> None:
        self.script = script
        self.events = events
        self.keys, self.args = script.call_args(events)

    def command(self) -> tuple[Any, ...]:
        """The call as an EVALSHA command; its reply is the list of the events' :class:`Outcome` codes
        and the server's ``TIME`` (seconds, microseconds) as the call ended.

        By sha alone, so a batch costs one round trip: a Redis that lost its scripts answers
        NOSCRIPT and the caller loads them (:meth:`ViewScript.load`) and runs the batch again.
        """
        return ("EVALSHA", self.script.script.sha, len(self.keys), *self.keys, *self.args)
