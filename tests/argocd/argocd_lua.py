"""Runs an Argo CD health script the way Argo CD does, on a real Lua 5.1.

Argo CD runs `health.lua` in gopher-lua (Lua 5.1): a fresh state per assessment, the
resource as the global `obj` (maps and lists as tables, null as nil), and the chunk's
return value read as `{status, message}`. A script installed from argocd-cm gets only the
base, table and package libraries (and a trimmed os), so this runtime takes the others
away, the string metatable included: a script that calls `string.format` or `s:sub` fails
here as it would in Argo CD. lupa's `lua51` module embeds the reference Lua 5.1, so `goto`,
`//` and `utf8` are refused as gopher-lua refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lupa import lua51

# What Argo CD accepts from a script; anything else it turns into Unknown.
HEALTH_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)

_NARROW = """
debug.setmetatable("", nil)
for _, name in ipairs({"string", "math", "io", "os", "debug", "coroutine", "python"}) do
  _G[name] = nil
  package.loaded[name] = nil
end
"""


class HealthScriptError(Exception):
    """The script raised, or returned something Argo CD would not read as a health status."""


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def to_lua(runtime: Any, value: Any) -> Any:
    """A decoded Kubernetes object as Argo CD's decodeValue hands it to Lua."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(runtime, item)
        return table
    if isinstance(value, datetime):  # YAML timestamps: JSON strings on the API server
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"not a JSON value: {value!r}")


def narrow_runtime() -> Any:
    """A Lua 5.1 state with only what an argocd-cm health script gets."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_NARROW)
    return runtime


def assess(script: str, obj: dict[str, Any]) -> Health:
    """The health `script` gives `obj`, in a fresh state as Argo CD runs it."""
    runtime = narrow_runtime()
    runtime.globals().obj = to_lua(runtime, obj)
    try:
        result = runtime.execute(script)
    except lua51.LuaError as exc:
        raise HealthScriptError(str(exc)) from exc
    if lua51.lua_type(result) != "table":
        raise HealthScriptError(f"expected a table from the script, got {result!r}")
    fields = dict(result.items())
    status, message = fields.pop("status", None), fields.pop("message", "")
    if fields:
        raise HealthScriptError(f"unexpected fields in the result: {sorted(fields)}")
    if status not in HEALTH_STATUSES or not isinstance(message, str):
        raise HealthScriptError(f"not a health status: {status!r}, {message!r}")
    return Health(status=status, message=message)
