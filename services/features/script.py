"""The streaming update: one Lua script per view, applied atomically per (event, view).

The script is generated from the view (its windows and fields baked in as a Lua
table), so a call carries only the event. Per call it:

1. refuses an event older than the entity's watermark ``T`` minus the lateness
   (returns ``LATE``), and one whose id it has already applied (``DUPLICATE``; the
   ids live in a sorted set by event time, trimmed to the lateness horizon, since an
   older duplicate is refused as late anyway);
2. adds the event to its bucket in every window that still holds it and drops the
   buckets that slid out when ``T`` advanced;
3. recomputes every feature as of ``T`` from the buckets (see
   :mod:`services.features.windows` for the maths) and writes the online hash in the
   layout of :mod:`shared.online`, refreshing every key's TTL.

Keys: ``<ns>:fs:<view>:{<entity>}`` (watermark, buckets, last two events),
``...:ids`` (applied ids) and ``...:d:<field>`` (sorted set value -> latest time, for
distinct counts) beside the online hash ``<ns>:fv:<view>:{<entity>}``; all share the entity's
hash tag, so one call touches one Redis Cluster slot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from services.features.views import Agg, FeatureView, categorical, numeric
from shared.online import feature_key
from shared.subjects import Names


class Outcome(IntEnum):
    APPLIED = 0
    DUPLICATE = 1
    LATE = 2
    FAILED = 3  # the script raised for this event (never returned by the script itself)


_BODY = r"""
local id = ARGV[1]
local ts = tonumber(ARGV[2])
local S, I, O = KEYS[1], KEYS[2], KEYS[3]
local NF = #SPEC.fields
local T = tonumber(redis.call('HGET', S, 'T'))
if T and ts < T - SPEC.lateness then return 2 end
if redis.call('ZADD', I, 'NX', ts, id) == 0 then return 1 end
local oldT = T
if (not T) or ts > T then T = ts end
if oldT and T > oldT then
  redis.call('ZREMRANGEBYSCORE', I, '-inf', '(' .. string.format('%.17g', T - SPEC.lateness))
end
local vals = {}
for j = 1, NF do
  local raw = ARGV[2 + j]
  if raw ~= '' then vals[j] = tonumber(raw) end
end
local floor = math.floor
local advanced = oldT and T > oldT
local sets = {'T', string.format('%d', T)}
local gone = {}
local agg = {}
for i, w in ipairs(SPEC.windows) do
  local b, n = w[1], w[2]
  local bT = floor(T / b)
  local lo = bT - n + 1
  local bno = floor(ts / b)
  local present = {}
  local cur
  if oldT then
    -- stored buckets lie in [floor(oldT/b) - n + 1, floor(oldT/b)]: drop those now below the window,
    -- read those still in it (none when T jumped a whole window: the common case of a sparse entity)
    local bo = floor(oldT / b)
    if advanced then
      for k = bo - n + 1, math.min(bo, lo - 1) do gone[#gone + 1] = i .. ':' .. k end
    end
    local top = math.min(bT, bo)
    if lo <= top then
      local wanted = {}
      for k = lo, top do wanted[#wanted + 1] = i .. ':' .. k end
      for idx, raw in ipairs(redis.call('HMGET', S, unpack(wanted))) do
        if raw then
          local st = cmsgpack.unpack(raw)
          if lo + idx - 1 == bno then cur = st else present[#present + 1] = st end
        end
      end
    end
  end
  if bno >= lo then
    if not cur then
      cur = {0}
      for j = 1, NF * 5 do cur[1 + j] = 0 end
    end
    cur[1] = cur[1] + 1
    for j = 1, NF do
      local x = vals[j]
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
    sets[#sets + 1] = i .. ':' .. bno
    sets[#sets + 1] = cmsgpack.pack(cur)
    present[#present + 1] = cur
  end
  local total = {0}
  for j = 1, NF * 5 do total[1 + j] = 0 end
  for _, st in ipairs(present) do
    total[1] = total[1] + st[1]
    for j = 1, NF do
      local o = 1 + (j - 1) * 5
      local c = st[o + 1]
      if c > 0 then
        if total[o + 1] == 0 then total[o + 4] = st[o + 4]; total[o + 5] = st[o + 5]
        else
          if st[o + 4] < total[o + 4] then total[o + 4] = st[o + 4] end
          if st[o + 5] > total[o + 5] then total[o + 5] = st[o + 5] end
        end
        total[o + 1] = total[o + 1] + c
        total[o + 2] = total[o + 2] + st[o + 2]
        total[o + 3] = total[o + 3] + st[o + 3]
      end
    end
  end
  agg[i] = total
end
if #gone > 0 then redis.call('HDEL', S, unpack(gone)) end
local distinct = {}
for d, spec in ipairs(SPEC.distinct) do
  -- value -> its latest event time, as a sorted set: a value is in a window as of T when
  -- its latest time is at or after the window's first bucket, (floor(T/b) - n + 1) * b
  local D = KEYS[3 + d]
  local value = ARGV[2 + NF + d]
  local counts = {}
  local lowest
  for f = 1, #spec do
    local b, n = spec[f][1], spec[f][2]
    local start = (floor(T / b) - n + 1) * b
    if (not lowest) or start < lowest then lowest = start end
    counts[f] = start
  end
  if value ~= '' and ts >= lowest then redis.call('ZADD', D, 'GT', ts, value) end
  if advanced then redis.call('ZREMRANGEBYSCORE', D, '-inf', '(' .. string.format('%d', lowest)) end
  for f = 1, #spec do
    counts[f] = redis.call('ZCOUNT', D, string.format('%d', counts[f]), '+inf')
  end
  distinct[d] = counts
  redis.call('PEXPIRE', D, SPEC.ttl)
end
local l1, l2
if SPEC.recency then
  if oldT then
    local r = redis.call('HMGET', S, 'l1', 'l2')
    if r[1] then l1 = cmsgpack.unpack(r[1]) end
    if r[2] then l2 = cmsgpack.unpack(r[2]) end
  end
  local new = {ts}
  for j = 1, NF do new[1 + j] = ARGV[2 + j] end
  if (not l1) or ts >= l1[1] then
    l2 = l1; l1 = new
    sets[#sets + 1] = 'l1'
    sets[#sets + 1] = cmsgpack.pack(l1)
    if l2 then sets[#sets + 1] = 'l2'; sets[#sets + 1] = cmsgpack.pack(l2) end
  elseif (not l2) or ts >= l2[1] then
    l2 = new
    sets[#sets + 1] = 'l2'
    sets[#sets + 1] = cmsgpack.pack(l2)
  end
end
local out = {}
local Ts = string.format('%d', T)
for _, f in ipairs(SPEC.features) do
  local kind, value = f[3], nil
  if kind == 'distinct_count' then
    local c = distinct[f[5]][f[6]]
    if c > 0 then value = c end
  elseif kind == 'last' then
    local raw = l1[1 + f[5]]
    if raw ~= '' then value = tonumber(raw) end
  elseif kind == 'time_since_last' then
    if l2 then
      local w = f[5]
      if (not w) or floor(l2[1] / w[1]) > floor(T / w[1]) - w[2] then value = l1[1] - l2[1] end
    end
  else
    local total = agg[f[5]]
    local j = f[6]
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
  if value == nil then value = f[4] end
  -- a Lua number reaches Redis as %.17g: exact, and what float() reads back
  out[#out + 1] = f[1]
  out[#out + 1] = value
  out[#out + 1] = f[2]
  out[#out + 1] = Ts
end
redis.call('HSET', O, unpack(out))
redis.call('HSET', S, unpack(sets))
redis.call('PEXPIRE', O, SPEC.ttl)
redis.call('PEXPIRE', S, SPEC.ttl)
redis.call('PEXPIRE', I, SPEC.ttl)
return 0
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


def render_lua(view: FeatureView) -> str:
    """The view's script: a ``SPEC`` table, then the generic body."""
    windows = view.windows
    fields = view.numeric_fields
    distinct_fields = view.distinct_fields
    distinct_windows: list[list[tuple[int, int]]] = [[] for _ in distinct_fields]
    features: list[list[Any]] = []
    for feature in view.features:
        row: list[Any] = [f"v:{feature.name}", f"t:{feature.name}", feature.agg.value, feature.default]
        if feature.agg == Agg.DISTINCT_COUNT:
            assert feature.field is not None and feature.window is not None
            d = distinct_fields.index(feature.field)
            distinct_windows[d].append((feature.window.bucket_ms, feature.window.buckets))
            row += [d + 1, len(distinct_windows[d])]
        elif feature.agg == Agg.LAST:
            assert feature.field is not None
            row += [fields.index(feature.field) + 1]
        elif feature.agg == Agg.TIME_SINCE_LAST:
            w = feature.window
            row += [None if w is None else (w.bucket_ms, w.buckets)]
        else:
            assert feature.window is not None
            row += [windows.index(feature.window) + 1, 0 if feature.field is None else fields.index(feature.field) + 1]
        features.append(row)
    spec = {
        "lateness": view.lateness_ms,
        "ttl": view.ttl_ms,
        "fields": list(fields),
        "windows": [(w.bucket_ms, w.buckets) for w in windows],
        "distinct": distinct_windows,
        "recency": any(f.agg in (Agg.LAST, Agg.TIME_SINCE_LAST) for f in view.features),
        "features": features,
    }
    return f"-- rtml features view {view.name} v{view.version}\nlocal SPEC = {_lua(spec)}\n{_BODY}"


def state_key(names: Names, view: str, entity: str) -> str:
    """``<ns>:fs:<view>:{<entity>}``: the entity's window state in one view."""
    return names.redis_key("fs", view, "{" + entity + "}")


def _number_arg(value: Any) -> str:
    x = numeric(value)
    return "" if x is None else repr(x)


class ViewScript:
    """One view's registered script and how to call it for an event."""

    def __init__(self, client: aioredis.Redis, names: Names, view: FeatureView) -> None:
        self.view = view
        self.names = names
        self.script: AsyncScript = client.register_script(render_lua(view))
        self._fields = view.numeric_fields
        self._distinct = view.distinct_fields

    def call_args(self, entity: str, event_id: str, ts: int, data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Keys and arguments of one call."""
        state = state_key(self.names, self.view.name, entity)
        keys = [state, state + ":ids", feature_key(self.names, self.view.name, entity)]
        keys += [f"{state}:d:{name}" for name in self._distinct]
        args = [event_id, str(int(ts))]
        args += [_number_arg(data.get(name)) for name in self._fields]
        args += [categorical(data.get(name)) or "" for name in self._distinct]
        return keys, args

    def enqueue(self, pipe: Any, entity: str, event_id: str, ts: int, data: Mapping[str, Any]) -> None:
        """Queue an EVALSHA on a pipeline (nothing is sent); its result is the :class:`Outcome` code.

        By sha alone, so a batch costs one round trip: a Redis that lost its scripts answers
        NOSCRIPT and the caller loads them (:meth:`load`) and runs the batch again.
        """
        keys, args = self.call_args(entity, event_id, ts, data)
        pipe.evalsha(self.script.sha, len(keys), *keys, *args)

    async def load(self, client: aioredis.Redis) -> None:
        await client.script_load(self.script.script)
