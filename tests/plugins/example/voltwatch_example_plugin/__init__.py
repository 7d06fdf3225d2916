"""The example Voltwatch plugin: the worked example of docs/writing-plugins.md.

It owns a configuration section, registers a service that writes a state and answers with a
response, serves one HTTP route and cleans up at shutdown. Everything a real detector plugin
does, minus the detector.

```yaml
example:
  greeting: 你好
```

`example.hello {"name": "配电箱1"}` sets `sensor.example_greeting` to "你好, 配电箱1!" and answers
`{"message": "你好, 配电箱1!"}`; `GET /api/example` returns the current greeting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import voluptuous as vol
from aiohttp import web

from hub import hookimpl
from hub.core.events import callback
from hub.core.services import ServiceCall

if TYPE_CHECKING:
    from hub.hub import Hub

DOMAIN = "example"
GREETING_ENTITY = "sensor.example_greeting"
DEFAULT_GREETING = "Hello"

# The `example:` section of configuration.yaml. The core validates it together with every other
# section before anything starts, and reports a bad value with file, line and key.
CONFIG_SCHEMA = vol.Schema({vol.Optional("greeting", default=DEFAULT_GREETING): str})

HELLO_SCHEMA = vol.Schema({vol.Optional("name", default="world"): vol.All(str, vol.Length(min=1))})


@hookimpl
def voltwatch_config_schema() -> dict[str, vol.Schema]:
    return {DOMAIN: CONFIG_SCHEMA}


@hookimpl
async def voltwatch_setup(hub: Hub, config: dict[str, Any]) -> None:
    # A section the user left out is absent from `config`: fill the defaults from our schema.
    settings = config.get(DOMAIN) or CONFIG_SCHEMA({})
    greeting: str = settings["greeting"]

    @callback
    def hello(call: ServiceCall) -> dict[str, str]:
        # A @callback handler runs inline in the event loop: fine here, it never blocks.
        message = f"{greeting}, {call.data['name']}!"
        _COUNTS[id(hub)] = _COUNTS.get(id(hub), 0) + 1
        # Passing the call's context links the state change to whoever called the service.
        hub.states.async_set(
            GREETING_ENTITY,
            message,
            {"friendly_name": "Example greeting", "greeted": call.data["name"]},
            context=call.context,
        )
        return {"message": message}

    hub.services.register(
        DOMAIN,
        "hello",
        hello,
        schema=HELLO_SCHEMA,
        supports_response=True,
        description="Greet someone: sets sensor.example_greeting and answers with the text.",
    )


@hookimpl
def voltwatch_http_routes(hub: Hub) -> list[web.RouteDef]:
    async def get_example(request: web.Request) -> web.Response:
        """The current greeting of the example plugin.

        Returns `{"greeting": text}`, or `{"greeting": null}` before `example.hello` was called.
        """
        state = hub.states.get(GREETING_ENTITY)
        return web.json_response({"greeting": state.state if state is not None else None})

    return [web.get("/api/example", get_example)]


# Greetings per hub (keyed by hub, since tests may run several hubs in one process).
_COUNTS: dict[int, int] = {}


@hookimpl
def voltwatch_metrics(hub: Hub) -> dict[str, float]:
    return {"example_greetings_total": _COUNTS.get(id(hub), 0)}


@hookimpl
def voltwatch_shutdown(hub: Hub) -> None:
    # Nobody may call the service once the hub is going down.
    hub.services.remove(DOMAIN, "hello")
