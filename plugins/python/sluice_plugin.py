"""Write Sluice handler plugins in Python: messages, order parsing, mutations, log, config.

The same module runs inside the component (built by ``sluice plugin build`` with
componentize-py against ``wit/handler.wit``) and natively under pytest, where the host's
``log`` and ``get-config`` are answered by the ``testing`` helpers below.

A plugin module defines ``handle(message)`` returning a list of mutations (``stock(...)``,
``emit(...)``, ``set_state(...)``, ``clear_state()``, ``upsert(...)``, ``delete(...)``,
``add(...)``) or raising ``Invalid`` / ``Rejected``,
optionally ``self_test()``, and ends with::

    WitWorld = sluice_plugin.export(handle, self_test=self_test)

Plugins are built against contract 0.3: on a route that keeps state, ``state()`` (or
``state_json()``) is the message key's state during the call; records emitted go out exactly
when the message applies, to the topics the route allows; rows written with ``upsert``,
``delete`` and ``add`` go to the tables the operator declared for the route, in the same
transaction. A row is a ``dict`` of column → value: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, a ``dict`` or ``list`` (JSON), ``timestamp(...)`` or ``json_value(...)``.

Any other exception is a bug in the plugin: the call traps and the record becomes a dead
letter with the traceback's last lines as its reason.
"""

import datetime
import json
from dataclasses import dataclass, field
from typing import Callable, List, Optional

try:  # Inside the component: the bindings componentize-py generated for the contract.
    from componentize_py_types import Err
    from wit_world.imports import host as _host
    from wit_world.imports import types as _types

    IN_COMPONENT = True
except ImportError:  # Natively (pytest): the same shapes, and a host the tests control.
    IN_COMPONENT = False
    _host = None
    _types = None

#: The largest quantity one order may take (as the Rust plugins' ``MAX_QUANTITY``).
MAX_QUANTITY = 1_000_000


class Invalid(Exception):
    """The message cannot be used (the reason should name the field): a dead letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Rejected(Exception):
    """The message is well formed but refused on business grounds: ``REJECTED``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Header:
    key: str
    value: Optional[bytes]


@dataclass
class Message:
    """One Kafka record, as the host hands it over (the component's own type has these fields)."""

    topic: str = "test"
    partition: int = 0
    offset: int = 0
    key: Optional[bytes] = None
    payload: bytes = b""
    headers: List[Header] = field(default_factory=list)
    timestamp_ms: Optional[int] = None


@dataclass
class StockAdjustment:
    """Change ``product_id``'s stock by ``delta`` (negative takes stock out)."""

    product_id: str
    delta: int


def stock(product_id: str, delta: int) -> StockAdjustment:
    """A stock adjustment mutation."""
    return StockAdjustment(product_id, delta)


@dataclass
class Emit:
    """Publish a record once the message applies (``value`` ``None``: a tombstone)."""

    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: List[Header] = field(default_factory=list)


@dataclass
class SetState:
    """Make ``value`` the message key's state once the message applies."""

    value: bytes


@dataclass
class ClearState:
    """Remove the message key's state once the message applies."""


def _bytes(value, what: str) -> Optional[bytes]:
    """Bytes for the contract's list<u8>, from bytes or text (UTF-8); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} is bytes or str, got {type(value).__name__}")


def emit(topic: str, key, value, headers=None) -> Emit:
    """Publish a record to ``topic`` (which the route must allow) once the message applies:
    ``key`` and ``value`` as bytes or text (``value`` ``None`` publishes a tombstone);
    ``headers`` as ``(key, value)`` pairs. The host sets its ``event-id`` header."""
    return Emit(
        str(topic),
        _bytes(key, "an emitted key"),
        _bytes(value, "an emitted value"),
        [Header(str(k), _bytes(v, "a header value")) for k, v in (headers or [])],
    )


def set_state(value) -> SetState:
    """Make ``value`` (bytes or text) the message key's state once the message applies."""
    if value is None:
        raise TypeError("a state is bytes or str; clear_state() removes it")
    return SetState(_bytes(value, "a state"))


def set_state_json(value) -> SetState:
    """``set_state`` with ``value`` as compact JSON (keys in the order given)."""
    return SetState(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def clear_state() -> ClearState:
    """Remove the message key's state once the message applies."""
    return ClearState()


@dataclass(frozen=True)
class Timestamp:
    """A time for a ``timestamptz`` or ``timestamp`` column, as RFC 3339 text with its offset."""

    text: str


@dataclass(frozen=True)
class Json:
    """JSON text for a ``json`` or ``jsonb`` column."""

    text: str


def timestamp(value) -> Timestamp:
    """A column value for a time: an aware ``datetime`` or RFC 3339 text
    (``2026-12-07T18:27:22.211Z``)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("a timestamp needs its offset (an aware datetime)")
        return Timestamp(value.isoformat())
    if isinstance(value, str):
        return Timestamp(value)
    raise TypeError(f"a timestamp is a datetime or str, got {type(value).__name__}")


def json_value(value) -> Json:
    """A column value for a ``json``/``jsonb`` column: ``value`` as compact JSON."""
    return Json(json.dumps(value, separators=(",", ":")))


@dataclass
class Upsert:
    """Insert ``row`` into ``table``, or update the row with its primary key."""

    table: str
    row: dict


@dataclass
class Delete:
    """Delete the row of ``table`` whose primary key is ``key``."""

    table: str
    key: dict


@dataclass
class Add:
    """Add ``delta`` to ``column`` of the row of ``table`` whose primary key is ``key`` (the
    row is made if absent)."""

    table: str
    key: dict
    column: str
    delta: object


def _row(cells, what: str) -> dict:
    if not isinstance(cells, dict):
        raise TypeError(f"{what} is a dict of column -> value, got {type(cells).__name__}")
    for column, value in cells.items():
        _check_value(value, f"{what}'s column `{column}`")
    return dict(cells)


def _check_value(value, what: str) -> None:
    if value is None or isinstance(value, (bool, float, str, bytes, bytearray, Timestamp, Json)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{what}: {value} is out of a 64-bit integer's range")
        return
    if isinstance(value, (dict, list)):
        return
    if isinstance(value, datetime.datetime):
        timestamp(value)
        return
    raise TypeError(f"{what}: {type(value).__name__} is not a column value")


def upsert(table: str, row: dict) -> Upsert:
    """Insert ``row`` (column -> value; every primary-key column among them) into ``table``,
    which the route must declare with ``upsert``, or update the row with the same key."""
    return Upsert(str(table), _row(row, "an upsert's row"))


def delete(table: str, key: dict) -> Delete:
    """Delete the row of ``table`` (declared with ``delete``) whose primary key is ``key``."""
    return Delete(str(table), _row(key, "a delete's key"))


def add(table: str, key: dict, column: str, delta) -> Add:
    """Add ``delta`` (an ``int`` or ``float``) to ``column`` of the row of ``table`` (declared
    with ``add``) whose primary key is ``key``; a missing row is made with ``delta``."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"an add's delta is an int or float, got {type(delta).__name__}")
    _check_value(delta, "an add's delta")
    return Add(str(table), _row(key, "an add's key"), str(column), delta)


#: The message key's state for the call under way (set by ``export`` and ``testing``).
_state: Optional[bytes] = None


def state() -> Optional[bytes]:
    """The message key's state as the host passed it to this call (``None``: the key has none,
    the message has no key, or the route keeps no state)."""
    return _state


def state_json():
    """The key's state parsed as JSON, ``None`` when there is none; a state that is not JSON is
    ``Invalid``."""
    if _state is None:
        return None
    try:
        return json.loads(bytes(_state).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Invalid(f"this key's state is not what it should be: {e}") from None


def text(message) -> str:
    """The payload as UTF-8 text (``Invalid`` if it is not)."""
    try:
        return bytes(message.payload).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"payload is not UTF-8: {e}") from None


def header(message, key: str) -> Optional[bytes]:
    """The first header named ``key``."""
    for h in message.headers:
        if h.key == key:
            return h.value
    return None


def key_str(message) -> Optional[str]:
    """The record key as text."""
    if message.key is None:
        return None
    try:
        return bytes(message.key).decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass
class OrderEvent:
    order_id: str
    product_id: str
    quantity: int


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class _Repeated(Exception):
    pass


def _unique(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Repeated(key)
        seen[key] = value
    return seen


#: The deepest nesting an event may have (as the Rust plugins' JSON parser allows).
MAX_DEPTH = 128


def _depth(document) -> int:
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return deepest


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_order(payload: bytes) -> OrderEvent:
    """The order service's event, parsed strictly as the Rust plugins do: every field present
    and well typed, keys unique, quantity in range. ``Invalid`` names what is wrong."""
    payload = bytes(payload)
    if not payload:
        raise Invalid("empty payload")
    try:
        body = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"payload is not UTF-8: {e}") from None
    try:
        document = json.loads(body, object_pairs_hook=_unique, parse_constant=_no_constant)
    except _Repeated as e:
        raise Invalid(f"payload is ambiguous: duplicate field `{e}`") from None
    except ValueError as e:
        raise Invalid(f"payload is not JSON: {e}") from None
    except RecursionError:
        raise Invalid("payload is not JSON: recursion limit exceeded") from None
    if _depth(document) > MAX_DEPTH:
        raise Invalid("payload is not JSON: recursion limit exceeded")
    if not isinstance(document, dict):
        raise Invalid(f"payload is JSON {_kind(document)} but must be an object")

    def present(name):
        value = document.get(name)
        if value is None:
            raise Invalid(f"missing field `{name}`")
        return value

    def non_empty_string(name):
        value = present(name)
        if not isinstance(value, str):
            raise Invalid(f"field `{name}` must be a string, got {_kind(value)}")
        if not value.strip():
            raise Invalid(f"field `{name}` is empty")
        return value

    def integer(name):
        value = present(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"field `{name}` must be an integer, got {_kind(value)}")
        if isinstance(value, float) or not -(2**63) <= value < 2**63:
            raise Invalid(f"field `{name}` must be an integer, got {value}")
        return value

    order_id = non_empty_string("orderId")
    non_empty_string("userId")
    product_id = non_empty_string("productId")
    quantity = integer("quantity")
    if quantity <= 0:
        raise Invalid(f"field `quantity` must be positive, got {quantity}")
    if quantity > MAX_QUANTITY:
        raise Invalid(f"field `quantity` must be at most {MAX_QUANTITY}, got {quantity}")
    unit_price = integer("unitPrice")
    if unit_price < 0:
        raise Invalid(f"field `unitPrice` must not be negative, got {unit_price}")
    integer("totalPrice")
    non_empty_string("createdAt")
    return OrderEvent(order_id, product_id, quantity)


def order(message) -> OrderEvent:
    """The message's payload as an order event (``Invalid`` says what is wrong)."""
    return parse_order(message.payload)


# Log levels, as the contract names them.
TRACE, DEBUG, INFO, WARN, ERROR = "trace", "debug", "info", "warn", "error"
_LEVELS = (TRACE, DEBUG, INFO, WARN, ERROR)
_KEPT_LOG_LINES = 1000
_logs: list = []
_config: dict = {}


def log(level: str, message: str) -> None:
    """Write a line to the host's log (tagged with the plugin's name and version there)."""
    if level not in _LEVELS:
        raise ValueError(f"log level is one of {', '.join(_LEVELS)}, got {level!r}")
    if len(_logs) < _KEPT_LOG_LINES:
        _logs.append((level, message))
    if IN_COMPONENT:
        _host.log(_host.Level[level.upper()], message)


def debug(message: str) -> None:
    log(DEBUG, message)


def info(message: str) -> None:
    log(INFO, message)


def warn(message: str) -> None:
    log(WARN, message)


def error(message: str) -> None:
    log(ERROR, message)


def config(key: str) -> Optional[str]:
    """This plugin's configuration value for ``key`` (set by the operator), if any."""
    if key in _config:
        return _config[key]
    if IN_COMPONENT:
        return _host.get_config(key)
    return None


def config_or(key: str, default, parse: Callable = None):
    """``key``'s value parsed as the type of ``default`` (or by ``parse``), ``default`` when it
    is not set; a value that does not parse is ``Invalid`` naming the key."""
    raw = config(key)
    if raw is None:
        return default
    convert = parse or type(default)
    try:
        return convert(raw.strip())
    except (TypeError, ValueError) as e:
        raise Invalid(f"configuration `{key}` = `{raw}`: {e}") from None


def _to_component(mutation):
    if isinstance(mutation, StockAdjustment):
        return _types.Mutation_StockAdjustment(
            _types.StockAdjustment(mutation.product_id, mutation.delta)
        )
    if isinstance(mutation, Emit):
        headers = [_types.Header(h.key, h.value) for h in mutation.headers]
        return _types.Mutation_Emit(
            _types.Emitted(mutation.topic, mutation.key, mutation.value, headers)
        )
    if isinstance(mutation, SetState):
        return _types.Mutation_SetState(mutation.value)
    if isinstance(mutation, ClearState):
        return _types.Mutation_ClearState()
    if isinstance(mutation, Upsert):
        return _types.Mutation_Upsert(_types.Upsert(mutation.table, _cells(mutation.row)))
    if isinstance(mutation, Delete):
        return _types.Mutation_Delete(_types.Delete(mutation.table, _cells(mutation.key)))
    if isinstance(mutation, Add):
        return _types.Mutation_Add(
            _types.Add(
                mutation.table, _cells(mutation.key), mutation.column, _value(mutation.delta)
            )
        )
    raise TypeError(
        "a mutation is made with stock(...), emit(...), set_state(...), clear_state(), "
        f"upsert(...), delete(...) or add(...), got {mutation!r}"
    )


def _cells(row: dict) -> list:
    return [_types.Cell(str(column), _value(value)) for column, value in row.items()]


def _value(value):
    """A column value in the contract's ``value`` variant."""
    if value is None:
        return _types.Value_Null()
    if isinstance(value, bool):
        return _types.Value_Boolean(value)
    if isinstance(value, int):
        return _types.Value_Int(value)
    if isinstance(value, float):
        return _types.Value_Float(value)
    if isinstance(value, str):
        return _types.Value_Text(value)
    if isinstance(value, (bytes, bytearray)):
        return _types.Value_Bytes(bytes(value))
    if isinstance(value, Timestamp):
        return _types.Value_Timestamp(value.text)
    if isinstance(value, datetime.datetime):
        return _types.Value_Timestamp(timestamp(value).text)
    if isinstance(value, Json):
        return _types.Value_Json(value.text)
    return _types.Value_Json(json_value(value).text)


def _call_with_state(handle: Callable, message, key_state: Optional[bytes]):
    global _state
    _state = None if key_state is None else bytes(key_state)
    try:
        return handle(message)
    finally:
        _state = None


def export(handle: Callable, self_test: Callable = None):
    """The class componentize-py instantiates (assign it to ``WitWorld`` in the app module):
    ``handle``'s list of mutations, or its ``Invalid``/``Rejected``, in the contract's types."""

    class WitWorld:
        # `state` is contract 0.2's; a component built against 0.1 is called without it.
        def handle(self, message, state=None):
            try:
                return [_to_component(m) for m in _call_with_state(handle, message, state)]
            except Invalid as e:
                raise Err(_types.HandlerError_InvalidMessage(e.reason)) from None
            except Rejected as e:
                raise Err(_types.HandlerError_Rejected(e.reason)) from None

        def self_test(self):
            if self_test is None:
                return None
            try:
                self_test()
            except Exception as e:  # noqa: BLE001 - every failure refuses the version
                raise Err(f"{type(e).__name__}: {e}") from None
            return None

    return WitWorld


class testing:
    """For tests: messages, configuration, log lines (natively; the component ignores them)."""

    @staticmethod
    def message(payload, **fields) -> Message:
        return Message(payload=_bytes(payload, "a payload"), **fields)

    @staticmethod
    def order(order_id: str, product_id: str, quantity: int) -> Message:
        payload = json.dumps(
            {
                "orderId": order_id,
                "userId": "test",
                "productId": product_id,
                "quantity": quantity,
                "unitPrice": 100,
                "totalPrice": 100 * quantity,
                "createdAt": "2026-01-01T00:00:00Z",
            }
        )
        return Message(
            payload=payload.encode(),
            key=product_id.encode(),
            headers=[Header("event-id", order_id.encode())],
        )

    @staticmethod
    def set_config(key: str, value: str) -> None:
        _config[key] = value

    @staticmethod
    def clear_config() -> None:
        _config.clear()

    @staticmethod
    def logs() -> list:
        return list(_logs)

    @staticmethod
    def clear_logs() -> None:
        _logs.clear()

    @staticmethod
    def adjustments(mutations) -> list:
        """The (product, delta) pairs of a list of mutations."""
        return [(m.product_id, m.delta) for m in mutations if isinstance(m, StockAdjustment)]

    @staticmethod
    def call_with_state(handle: Callable, message, key_state=None):
        """``handle(message)`` with ``key_state`` (bytes or text) as the key's state."""
        return _call_with_state(handle, message, _bytes(key_state, "a state"))

    @staticmethod
    def fold(handle: Callable, messages, key_state=None):
        """Call one key's messages as the host does, each with the state the earlier ones
        left: (each one's mutations, or the ``Invalid``/``Rejected`` it raised; the state
        after the last)."""
        state = _bytes(key_state, "a state")
        outcomes = []
        for message in messages:
            try:
                mutations = _call_with_state(handle, message, state)
            except (Invalid, Rejected) as e:
                outcomes.append(e)
                continue
            state = testing.state_after(mutations, state)
            outcomes.append(mutations)
        return outcomes, state

    @staticmethod
    def emitted(mutations) -> list:
        """The records a list of mutations emits."""
        return [m for m in mutations if isinstance(m, Emit)]

    @staticmethod
    def table_writes(mutations) -> list:
        """The table writes (``Upsert``, ``Delete``, ``Add``) of a list of mutations."""
        return [m for m in mutations if isinstance(m, (Upsert, Delete, Add))]

    @staticmethod
    def upserted(mutations, table: str, column: str):
        """The value the first upsert into ``table`` gives ``column`` (``KeyError`` if none)."""
        for m in mutations:
            if isinstance(m, Upsert) and m.table == table and column in m.row:
                return m.row[column]
        raise KeyError(f"no upsert into {table} with column {column}")

    @staticmethod
    def state_after(mutations, before=None) -> Optional[bytes]:
        """The key's state once these mutations apply, from ``before``."""
        after = _bytes(before, "a state")
        for m in mutations:
            if isinstance(m, SetState):
                after = m.value
            elif isinstance(m, ClearState):
                after = None
        return after
