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

Each entity's window state (watermark, buckets, last two events) is one msgpack
string, read once per call and written once at its end, together with the online
hash: every feature recomputed as of ``T`` from the buckets (see
:mod:`services.features.windows` for the maths), in the layout of
:mod:`shared.online`, every key's TTL refreshed. So a run of events for one hot
entity costs one state read, one state write and one online write, and the per-call
overhead on both sides is paid once per run instead of once per event.

Keys per (view, entity): ``<ns>:fs:<view>:{<entity>}:w`` (window state; it also
holds the applied ids and the distinct-count values while there are at most
:data:`INLINE_MAX` of each), ``...:ids`` (applied ids) and ``...:d:<field>`` (value ->
latest time, for distinct counts), sorted sets used once an entity has more, beside
the online hash ``<ns>:fv:<view>:{<entity>}``. One
entity's keys share its hash tag; a call spans the entities of its events, so it
needs them on one Redis (a primary, as ``shared.online.open_redis`` connects to).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from services.features.views import Agg, FeatureView, Window, categorical, numeric
from shared.online import AS_OF_FIELD, VALUES_FIELD, feature_key
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
local LATENESS, TTL, INLINE_MAX = SPEC.lateness, SPEC.ttl, SPEC.inline_max
local seen, order, codes, xs = {}, {}, {}, {}
local FEATURES = SPEC.features
local NFEAT = #FEATURES
-- Scratch tables reused from entity to entity within the call (every slot is written before
-- it is read), instead of new ones grown slot by slot for every entity: the feature map (every
-- feature is set at every write), the window totals, the distinct counts, a window's bucket
-- numbers (emptied after each use, so its length is what was put in).
local values, agg, totals, distinct, starts, ks = {}, {}, {}, {}, {}, {}

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

-- Applied ids and distinct values live in the state string while an entity has few of them
-- (at most SPEC.inline_max), and in their own sorted sets once it has more ("spilled"), so
-- the common sparse entity costs no sorted-set commands.
local function applied_before(ent, id, ts)
  local st = ent.st
  if not st.i then return redis.call('ZADD', KEYS[ent.kb + 2], 'NX', ts, id) == 0 end
  if st.i[id] then return true end
  st.i[id] = ts
  ent.ni = ent.ni + 1
  if ent.ni > INLINE_MAX then
    local args = {}
    for known, at in pairs(st.i) do args[#args + 1] = at; args[#args + 1] = known end
    redis.call('ZADD', KEYS[ent.kb + 2], 'NX', unpack(args))
    st.i = nil
  end
  return false
end

local function spill_distinct(ent, d)
  local args = {}
  for value, at in pairs(ent.st.d[d]) do args[#args + 1] = at; args[#args + 1] = value end
  redis.call('ZADD', KEYS[ent.kb + 3 + d], 'GT', unpack(args))
  ent.st.d[d] = {}
  ent.st.ds[d] = true
end

for e = 0, #ARGV / SA - 1 do
  local kb, ab = e * SK, e * SA
  local S = KEYS[kb + 1]
  local ent = seen[S]
  if not ent then
    local raw = redis.call('GET', S)
    local st
    if raw then st = cmsgpack.unpack(raw) else st = {b = {}, i = {}, d = {}, ds = {}} end
    if not st.ds then  -- written before ids and values could be inline: all in sorted sets
      st.d, st.ds = {}, {}
      for d = 1, ND do st.ds[d] = true end
    end
    for i = 1, #W do if not st.b[i] then st.b[i] = {} end end
    ent = {kb = kb, st = st, oldT = st.t, dirty = false, ni = 0, nd = {}}
    if st.i then for _ in pairs(st.i) do ent.ni = ent.ni + 1 end end
    for d = 1, ND do
      if not st.ds[d] then
        if not st.d[d] then st.d[d] = {} end
        local n = 0
        for _ in pairs(st.d[d]) do n = n + 1 end
        ent.nd[d] = n
      end
    end
    seen[S] = ent
    order[#order + 1] = ent
  end
  local st = ent.st
  local id, ts = ARGV[ab + 1], tonumber(ARGV[ab + 2])
  local T = st.t
  if T and ts < T - LATENESS then
    codes[e + 1] = 2
  elseif applied_before(ent, id, ts) then
    codes[e + 1] = 1
  else
    codes[e + 1] = 0
    ent.dirty = true
    if (not T) or ts > T then T = ts; st.t = ts end
    for j = 1, NF do
      local raw = ARGV[ab + 2 + j]
      xs[j] = raw ~= '' and tonumber(raw)  -- false: the event lacks the field
    end
    for i = 1, NW do
      local w = W[i]
      local b = w[1]
      local bno = (ts - ts % b) / b
      if bno > (T - T % b) / b - w[2] then
        local bs = st.b[i]
        local cur = bs[bno]
        if not cur then cur = new_bucket(); bs[bno] = cur end
        cur[1] = cur[1] + 1
        for j = 1, NF do
          local x = xs[j]
          if x then
            local o = 1 + (j - 1) * 5
            if cur[o + 1] == 0 then cur[o + 4] = x; cur[o + 5] = x
            else
              if x < cur[o + 4] then cur[o + 4] = x end
              if x > cur[o + 5] then cur[o + 5] = x end
            end
            cur[o + 1] = cur[o + 1] + 1
            cur[o + 2] = cur[o + 2] + x
            cur[o + 3] = cur[o + 3] + x * x
          end
        end
      end
    end
    for d, spec in ipairs(SPEC.distinct) do
      -- value -> its latest event time: a value is in a window as of T when its latest
      -- time is at or after the window's first instant
      local value = ARGV[ab + 2 + NF + d]
      if value ~= '' and ts >= lowest_start(spec, T) then
        local inline = st.d[d]
        if st.ds[d] then
          redis.call('ZADD', KEYS[kb + 3 + d], 'GT', ts, value)
        elseif inline[value] then
          if ts > inline[value] then inline[value] = ts end
        else
          inline[value] = ts
          ent.nd[d] = ent.nd[d] + 1
          if ent.nd[d] > INLINE_MAX then spill_distinct(ent, d) end
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

for _, ent in ipairs(order) do
  if ent.dirty then
    local st, kb = ent.st, ent.kb
    local T = st.t
    local advanced = (not ent.oldT) or T > ent.oldT
    if st.i then
      for known, at in pairs(st.i) do
        if at < T - LATENESS then st.i[known] = nil end
      end
    else
      if advanced then
        redis.call('ZREMRANGEBYSCORE', KEYS[kb + 2], '-inf', '(' .. string.format('%.17g', T - LATENESS))
      end
      redis.call('PEXPIRE', KEYS[kb + 2], TTL)
    end
    for i = 1, NW do
      local w = W[i]
      local b = w[1]
      local lo = (T - T % b) / b - w[2] + 1
      local bs = st.b[i]
      local nk = 0
      for k in pairs(bs) do
        if k < lo then bs[k] = nil else nk = nk + 1; ks[nk] = k end
      end
      if nk == 1 then
        agg[i] = bs[ks[1]]  -- read only below
      else
        table.sort(ks)  -- sums in bucket order, so equal states give bit-equal features
        local total = totals[i]
        if not total then total = {}; totals[i] = total end
        for j = 1, 1 + NF * 5 do total[j] = 0 end
        for q = 1, nk do
          local bucket = bs[ks[q]]
          total[1] = total[1] + bucket[1]
          for j = 1, NF do
            local o = 1 + (j - 1) * 5
            local c = bucket[o + 1]
            if c > 0 then
              if total[o + 1] == 0 then total[o + 4] = bucket[o + 4]; total[o + 5] = bucket[o + 5]
              else
                if bucket[o + 4] < total[o + 4] then total[o + 4] = bucket[o + 4] end
                if bucket[o + 5] > total[o + 5] then total[o + 5] = bucket[o + 5] end
              end
              total[o + 1] = total[o + 1] + c
              total[o + 2] = total[o + 2] + bucket[o + 2]
              total[o + 3] = total[o + 3] + bucket[o + 3]
            end
          end
        end
        agg[i] = total
      end
      for q = 1, nk do ks[q] = nil end
    end
    for d, spec in ipairs(SPEC.distinct) do
      local counts = distinct[d]
      if not counts then counts = {}; distinct[d] = counts end
      if st.ds[d] then
        local D = KEYS[kb + 3 + d]
        if advanced then
          redis.call('ZREMRANGEBYSCORE', D, '-inf', '(' .. string.format('%d', lowest_start(spec, T)))
        end
        for f = 1, #spec do
          counts[f] = redis.call('ZCOUNT', D, string.format('%d', window_start(spec[f], T)), '+inf')
        end
        redis.call('PEXPIRE', D, TTL)
      else
        local lowest = lowest_start(spec, T)
        for f = 1, #spec do
          starts[f] = window_start(spec[f], T)
          counts[f] = 0
        end
        for value, at in pairs(st.d[d]) do
          if at < lowest then st.d[d][value] = nil
          else
            for f = 1, #spec do
              if at >= starts[f] then counts[f] = counts[f] + 1 end
            end
          end
        end
      end
    end
    local l1, l2 = st.l1, st.l2
    local Ts = string.format('%d', T)
    for q = 1, NFEAT do
      local f = FEATURES[q]
      local kind, value = f[2], nil
      if kind == 'distinct_count' then
        local c = distinct[f[4]][f[5]]
        if c > 0 then value = c end
      elseif kind == 'last' then
        local raw = l1[1 + f[4]]
        if raw ~= '' then value = tonumber(raw) end
      elseif kind == 'time_since_last' then
        if l2 then
          local w = f[4]
          if (not w) or l2[1] >= window_start(w, T) then value = l1[1] - l2[1] end
        end
      else
        local total = agg[f[4]]
        local j = f[5]
        if kind == 'count' and j == 0 then
          if total[1] > 0 then value = total[1] end
        else
          local o = 1 + (j - 1) * 5
          local c = total[o + 1]
          if c > 0 then
            if kind == 'count' then value = c
            elseif kind == 'sum' then value = total[o + 2]
            elseif kind == 'mean' then value = total[o + 2] / c
            elseif kind == 'min' then value = total[o + 4]
            elseif kind == 'max' then value = total[o + 5]
            elseif kind == 'stddev' then
              local mean = total[o + 2] / c
              local var = total[o + 3] / c - mean * mean
              if var < 0 then var = 0 end
              value = math.sqrt(var)
            end
          end
        end
      end
      if value == nil then value = f[3] end
      values[f[1]] = value  -- cmsgpack keeps a double exact (an integral one as an integer)
    end
    local O = KEYS[kb + 3]
    redis.call('HSET', O, SPEC.values, cmsgpack.pack(values), SPEC.as_of, Ts)
    redis.call('PEXPIRE', O, TTL)
    redis.call('SET', KEYS[kb + 1], cmsgpack.pack(st), 'PX', TTL)
  end
end
return codes
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


def render_lua(view: FeatureView, *, inline_max: int = INLINE_MAX) -> str:
    """The view's script: a ``SPEC`` table, then the generic body."""
    windows = view.windows
    fields = view.numeric_fields
    distinct_fields = view.distinct_fields
    distinct_windows: list[list[tuple[int, int, int]]] = [[] for _ in distinct_fields]
    features: list[list[Any]] = []
    for feature in view.features:
        row: list[Any] = [feature.name, feature.agg.value, feature.default]
        if feature.agg == Agg.DISTINCT_COUNT:
            assert feature.field is not None and feature.window is not None
            d = distinct_fields.index(feature.field)
            distinct_windows[d].append(_window(feature.window))
            row += [d + 1, len(distinct_windows[d])]
        elif feature.agg == Agg.LAST:
            assert feature.field is not None
            row += [fields.index(feature.field) + 1]
        elif feature.agg == Agg.TIME_SINCE_LAST:
            w = feature.window
            row += [None if w is None else _window(w)]
        else:
            assert feature.window is not None
            row += [windows.index(feature.window) + 1, 0 if feature.field is None else fields.index(feature.field) + 1]
        features.append(row)
    spec = {
        "lateness": view.lateness_ms,
        "ttl": view.ttl_ms,
        "fields": list(fields),
        "windows": [_window(w) for w in windows],
        "distinct": distinct_windows,
        "recency": any(f.agg in (Agg.LAST, Agg.TIME_SINCE_LAST) for f in view.features),
        "features": features,
        "values": VALUES_FIELD,
        "as_of": AS_OF_FIELD,
        "inline_max": inline_max,
    }
    # a bucket: the event count, then per numeric field count, sum, sum of squares, min, max; a
    # constructor of that size allocates it once (filling {0} slot by slot grew it three times)
    zeros = ", ".join(["0"] * (1 + 5 * len(fields)))
    return (
        f"-- rtml features view {view.name} v{view.version}\nlocal SPEC = {_lua(spec)}\n"
        f"local function new_bucket() return {{{zeros}}} end\n{_BODY}"
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

    def enqueue(self, pipe: Any) -> None:
        """Queue the call's EVALSHA on a pipeline (nothing is sent); its result is the list of the
        events' :class:`Outcome` codes.

        By sha alone, so a batch costs one round trip: a Redis that lost its scripts answers
        NOSCRIPT and the caller loads them (:meth:`ViewScript.load`) and runs the batch again.
        """
        pipe.evalsha(self.script.script.sha, len(self.keys), *self.keys, *self.args)
