// Write Sluice handler plugins in JavaScript: messages, order parsing, mutations, log, config.
//
// The same module runs inside the component (built by `sluice plugin build` with
// ComponentizeJS against wit/handler.wit) and natively under `node --test`, where the host's
// `log` and `get-config` are answered by the `testing` helpers below.
//
// A plugin module exports `handle(message)` returning an array of mutations (`stock(...)`,
// `emit(...)`, `setState(...)`, `clearState()`, `upsert(...)`, `del(...)`, `add(...)`) or
// throwing `Invalid` / `Rejected`, and
// optionally `selfTest()`. Any other exception is a bug in the plugin: the record becomes a
// dead letter of kind `trap` with the error as its reason.
//
// Plugins are built against contract 0.3: on a route that keeps state, `state()` (or
// `stateJson()`) is the message key's state during the call; records emitted go out exactly
// when the message applies, to the topics the route allows; rows written with `upsert`, `del`
// and `add` go to the tables the operator declared for the route, in the same transaction. A
// row is an object of column -> value: null (or undefined), a boolean, a Number (an integer
// is `int`, another number `float`), a BigInt, a string, a Uint8Array, a Date, an array or
// plain object (JSON), `timestamp(...)` or `jsonValue(...)`.

/** The largest quantity one order may take (as the Rust plugins' `MAX_QUANTITY`). */
export const MAX_QUANTITY = 1000000n;

/** The message cannot be used (the reason should name the field): a dead letter. */
export class Invalid extends Error {
  constructor(reason) {
    super(reason);
    this.name = 'Invalid';
    this.reason = reason;
    this.sluiceError = 'invalid-message';
  }
}

/** The message is well formed but refused on business grounds: `REJECTED`. */
export class Rejected extends Error {
  constructor(reason) {
    super(reason);
    this.name = 'Rejected';
    this.reason = reason;
    this.sluiceError = 'rejected';
  }
}

/** A stock adjustment: change `productId`'s stock by `delta` (negative takes stock out). */
export function stock(productId, delta) {
  return { tag: 'stock-adjustment', val: { productId: String(productId), delta: BigInt(delta) } };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

// Bytes for the contract's list<u8>: from a string (UTF-8), a typed array or an ArrayBuffer
// (what a message's `key` and `payload` are), or an array of byte values.
function bytes(value, what) {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encoder.encode(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (Array.isArray(value)) return Uint8Array.from(value);
  throw new TypeError(`${what} is bytes (a Uint8Array) or a string, got ${typeof value}`);
}

/**
 * Publish a record to `topic` (which the route must allow) once the message applies: `key` and
 * `value` as Uint8Arrays or strings (`value` undefined publishes a tombstone), `headers` as
 * `[key, value]` pairs. The host sets its `event-id` header.
 */
export function emit(topic, key, value, headers = []) {
  return {
    tag: 'emit',
    val: {
      topic: String(topic),
      key: bytes(key, 'an emitted key'),
      value: bytes(value, 'an emitted value'),
      headers: headers.map(([k, v]) => ({ key: String(k), value: bytes(v, 'a header value') })),
    },
  };
}

/** Make `value` (a Uint8Array or a string) the message key's state once the message applies. */
export function setState(value) {
  const state = bytes(value, 'a state');
  if (state === undefined) {
    throw new TypeError('a state is a Uint8Array or a string; clearState() removes it');
  }
  return { tag: 'set-state', val: state };
}

/** `setState` with `value` as JSON. */
export function setStateJson(value) {
  return setState(JSON.stringify(value));
}

/** Remove the message key's state once the message applies. */
export function clearState() {
  return { tag: 'clear-state' };
}

/** A column value already in the contract's shape (`timestamp(...)`, `jsonValue(...)`). */
class ColumnValue {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}

/** A time for a `timestamptz`/`timestamp` column: a Date or RFC 3339 text with its offset. */
export function timestamp(value) {
  if (value instanceof Date) return new ColumnValue('timestamp', value.toISOString());
  if (typeof value === 'string') return new ColumnValue('timestamp', value);
  throw new TypeError(`a timestamp is a Date or a string, got ${typeof value}`);
}

/** A value for a `json`/`jsonb` column: `value` as JSON text. */
export function jsonValue(value) {
  return new ColumnValue('json', JSON.stringify(value));
}

// A column value in the contract's `value` variant.
function columnValue(value, what) {
  if (value instanceof ColumnValue) return { tag: value.tag, val: value.val };
  if (value === null || value === undefined) return { tag: 'null' };
  switch (typeof value) {
    case 'boolean':
      return { tag: 'boolean', val: value };
    case 'bigint':
      if (value < I64_MIN || value > I64_MAX) {
        throw new RangeError(`${what}: ${value} is out of a 64-bit integer's range`);
      }
      return { tag: 'int', val: value };
    case 'number':
      if (Number.isSafeInteger(value)) return { tag: 'int', val: BigInt(value) };
      return { tag: 'float', val: value };
    case 'string':
      return { tag: 'text', val: value };
    default:
  }
  if (value instanceof Date) return { tag: 'timestamp', val: value.toISOString() };
  if (value instanceof Uint8Array || ArrayBuffer.isView(value)) {
    return { tag: 'bytes', val: bytes(value, what) };
  }
  if (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype) {
    return { tag: 'json', val: JSON.stringify(value) };
  }
  throw new TypeError(`${what}: ${typeof value} is not a column value`);
}

// The contract's cells from an object of column -> value.
function cells(row, what) {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) {
    throw new TypeError(`${what} is an object of column -> value`);
  }
  return Object.entries(row).map(([column, value]) => ({
    column,
    value: columnValue(value, `${what}'s column \`${column}\``),
  }));
}

/**
 * Insert `row` (column -> value; every primary-key column among them) into `table`, which the
 * route must declare with `upsert`, or update the row with the same key.
 */
export function upsert(table, row) {
  return { tag: 'upsert', val: { table: String(table), row: cells(row, "an upsert's row") } };
}

/** Delete the row of `table` (declared with `delete`) whose primary key is `key`. */
export function del(table, key) {
  return { tag: 'delete', val: { table: String(table), key: cells(key, "a delete's key") } };
}

/**
 * Add `delta` (a Number or BigInt) to `column` of the row of `table` (declared with `add`)
 * whose primary key is `key`; a missing row is made with `delta`.
 */
export function add(table, key, column, delta) {
  if (typeof delta !== 'number' && typeof delta !== 'bigint') {
    throw new TypeError(`an add's delta is a Number or BigInt, got ${typeof delta}`);
  }
  return {
    tag: 'add',
    val: {
      table: String(table),
      key: cells(key, "an add's key"),
      column: String(column),
      delta: columnValue(delta, "an add's delta"),
    },
  };
}

/**
 * The message key's state as the host passed it to this call (a Uint8Array; undefined when the
 * key has none, the message has no key, or the route keeps no state). The build's entry module
 * sets it around each call, as `testing.callWithState` does natively.
 */
export function state() {
  return bytes(globalThis.__sluiceState, 'a state');
}

/**
 * The key's state parsed as JSON, undefined when there is none; a state that is not JSON is
 * `Invalid`.
 */
export function stateJson() {
  const current = state();
  if (current === undefined) return undefined;
  try {
    return JSON.parse(utf8.decode(current));
  } catch (e) {
    throw new Invalid(`this key's state is not what it should be: ${e.message}`);
  }
}

/** The payload as UTF-8 text (`Invalid` if it is not). */
export function text(message) {
  try {
    return utf8.decode(message.payload);
  } catch (e) {
    throw new Invalid(`payload is not UTF-8: ${e.message}`);
  }
}

/** The first header named `key` (a Uint8Array, or undefined). */
export function header(message, key) {
  const found = (message.headers || []).find((h) => h.key === key);
  return found ? found.value : undefined;
}

/** The record key as text, or undefined. */
export function keyString(message) {
  if (message.key === undefined || message.key === null) return undefined;
  try {
    return utf8.decode(message.key);
  } catch {
    return undefined;
  }
}

function kind(value) {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return 'a boolean';
  if (typeof value === 'number') return 'a number';
  if (typeof value === 'string') return 'a string';
  if (Array.isArray(value)) return 'an array';
  return 'an object';
}

// The top-level fields of a JSON object (already validated by JSON.parse), in order, with
// each value's raw text: JSON.parse keeps the last of repeated keys and reads integers as
// doubles, and an order must refuse the first and keep the second exact.
function topLevelFields(body) {
  const fields = [];
  let i = body.indexOf('{') + 1;
  const skipSpace = () => {
    while (i < body.length && ' \t\r\n'.includes(body[i])) i++;
  };
  const scanString = () => {
    const start = i++;
    while (body[i] !== '"') i += body[i] === '\\' ? 2 : 1;
    i++;
    return body.slice(start, i);
  };
  const scanValue = () => {
    const start = i;
    if (body[i] === '"') {
      scanString();
      return body.slice(start, i);
    }
    if (body[i] === '{' || body[i] === '[') {
      let depth = 0;
      do {
        if (body[i] === '"') {
          scanString();
          continue;
        }
        if (body[i] === '{' || body[i] === '[') depth++;
        if (body[i] === '}' || body[i] === ']') depth--;
        i++;
      } while (depth > 0);
      return body.slice(start, i);
    }
    while (i < body.length && !',}'.includes(body[i]) && !' \t\r\n'.includes(body[i])) i++;
    return body.slice(start, i);
  };
  for (;;) {
    skipSpace();
    if (body[i] === '}') return fields;
    const key = JSON.parse(scanString());
    skipSpace();
    i++; // ':'
    skipSpace();
    fields.push([key, scanValue()]);
    skipSpace();
    if (body[i] === ',') i++;
  }
}

/** The deepest nesting an event may have (as the Rust plugins' JSON parser allows). */
const MAX_DEPTH = 128;

function depth(document) {
  let deepest = 0;
  const pending = [[document, 1]];
  while (pending.length > 0) {
    const [value, level] = pending.pop();
    if (value === null || typeof value !== 'object') continue;
    deepest = Math.max(deepest, level);
    for (const child of Object.values(value)) pending.push([child, level + 1]);
  }
  return deepest;
}

const INTEGER = /^-?(0|[1-9][0-9]*)$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * The order service's event, parsed strictly as the Rust plugins do: every field present and
 * well typed, keys unique, quantity in range. `Invalid` names what is wrong. Numbers come back
 * as BigInt (`quantity`), as the contract's s64.
 */
export function parseOrder(payload) {
  if (!payload || payload.length === 0) throw new Invalid('empty payload');
  let body;
  try {
    body = utf8.decode(payload);
  } catch (e) {
    throw new Invalid(`payload is not UTF-8: ${e.message}`);
  }
  let document;
  try {
    document = JSON.parse(body);
  } catch (e) {
    throw new Invalid(`payload is not JSON: ${e.message}`);
  }
  if (depth(document) > MAX_DEPTH) {
    throw new Invalid('payload is not JSON: recursion limit exceeded');
  }
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    throw new Invalid(`payload is JSON ${kind(document)} but must be an object`);
  }
  const raw = new Map();
  for (const [key, value] of topLevelFields(body)) {
    if (raw.has(key)) throw new Invalid(`payload is ambiguous: duplicate field \`${key}\``);
    raw.set(key, value);
  }
  const present = (name) => {
    const value = document[name];
    if (value === undefined || value === null || !Object.hasOwn(document, name)) {
      throw new Invalid(`missing field \`${name}\``);
    }
    return value;
  };
  const nonEmptyString = (name) => {
    const value = present(name);
    if (typeof value !== 'string') {
      throw new Invalid(`field \`${name}\` must be a string, got ${kind(value)}`);
    }
    if (value.trim() === '') throw new Invalid(`field \`${name}\` is empty`);
    return value;
  };
  const integer = (name) => {
    const value = present(name);
    if (typeof value !== 'number') {
      throw new Invalid(`field \`${name}\` must be an integer, got ${kind(value)}`);
    }
    const text = raw.get(name);
    const exact = INTEGER.test(text) ? BigInt(text) : undefined;
    if (exact === undefined || exact < I64_MIN || exact > I64_MAX) {
      throw new Invalid(`field \`${name}\` must be an integer, got ${text}`);
    }
    return exact;
  };
  const orderId = nonEmptyString('orderId');
  nonEmptyString('userId');
  const productId = nonEmptyString('productId');
  const quantity = integer('quantity');
  if (quantity <= 0n) throw new Invalid(`field \`quantity\` must be positive, got ${quantity}`);
  if (quantity > MAX_QUANTITY) {
    throw new Invalid(`field \`quantity\` must be at most ${MAX_QUANTITY}, got ${quantity}`);
  }
  const unitPrice = integer('unitPrice');
  if (unitPrice < 0n) {
    throw new Invalid(`field \`unitPrice\` must not be negative, got ${unitPrice}`);
  }
  integer('totalPrice');
  nonEmptyString('createdAt');
  return { orderId, productId, quantity };
}

/** The message's payload as an order event (`Invalid` says what is wrong). */
export function order(message) {
  return parseOrder(message.payload);
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
const KEPT_LOG_LINES = 1000;
const logs = [];
const config = new Map();

// Inside the component the build's entry module sets this to the contract's `host` imports.
const host = () => globalThis.__sluiceHost;

/** Write a line to the host's log (tagged with the plugin's name and version there). */
export function log(level, message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log level is one of ${LEVELS.join(', ')}, got ${level}`);
  }
  if (logs.length < KEPT_LOG_LINES) logs.push([level, String(message)]);
  host()?.log(level, String(message));
}

export const debug = (message) => log('debug', message);
export const info = (message) => log('info', message);
export const warn = (message) => log('warn', message);
export const error = (message) => log('error', message);

/** This plugin's configuration value for `key` (set by the operator), or undefined. */
export function getConfig(key) {
  if (config.has(key)) return config.get(key);
  return host()?.getConfig(key) ?? undefined;
}

/**
 * `key`'s value parsed by `parse` (Number by default), `fallback` when it is not set; a value
 * that does not parse (NaN) is `Invalid` naming the key.
 */
export function configOr(key, fallback, parse = Number) {
  const raw = getConfig(key);
  if (raw === undefined) return fallback;
  let value;
  try {
    value = parse(raw.trim());
  } catch (e) {
    throw new Invalid(`configuration \`${key}\` = \`${raw}\`: ${e.message}`);
  }
  if (typeof value === 'number' && Number.isNaN(value)) {
    throw new Invalid(`configuration \`${key}\` = \`${raw}\`: not a number`);
  }
  return value;
}

/** For tests: messages, configuration, log lines (natively; the component ignores them). */
export const testing = {
  message(payload, fields = {}) {
    return {
      topic: 'test',
      partition: 0,
      offset: 0n,
      key: undefined,
      payload: bytes(payload, 'a payload'),
      headers: [],
      timestampMs: undefined,
      ...fields,
    };
  },
  order(orderId, productId, quantity) {
    const payload = JSON.stringify({
      orderId,
      userId: 'test',
      productId,
      quantity,
      unitPrice: 100,
      totalPrice: 100 * quantity,
      createdAt: '2026-01-01T00:00:00Z',
    });
    return testing.message(payload, {
      key: encoder.encode(productId),
      headers: [{ key: 'event-id', value: encoder.encode(orderId) }],
    });
  },
  setConfig(key, value) {
    config.set(key, value);
  },
  clearConfig() {
    config.clear();
  },
  logs() {
    return [...logs];
  },
  clearLogs() {
    logs.length = 0;
  },
  /** The [product, delta] pairs of an array of mutations (deltas as Numbers). */
  adjustments(mutations) {
    return mutations
      .filter((m) => m.tag === 'stock-adjustment')
      .map((m) => [m.val.productId, Number(m.val.delta)]);
  },
  /** `handle(message)` with `keyState` (a Uint8Array or a string) as the key's state. */
  callWithState(handle, message, keyState) {
    globalThis.__sluiceState = bytes(keyState, 'a state');
    try {
      return handle(message);
    } finally {
      globalThis.__sluiceState = undefined;
    }
  },
  /**
   * Call one key's messages as the host does, each with the state the earlier ones left:
   * `[outcomes, state]`, an outcome being the mutations or the `Invalid`/`Rejected` thrown.
   */
  fold(handle, messages, keyState) {
    let state = bytes(keyState, 'a state');
    const outcomes = [];
    for (const message of messages) {
      try {
        const mutations = testing.callWithState(handle, message, state);
        state = testing.stateAfter(mutations, state);
        outcomes.push(mutations);
      } catch (e) {
        if (!(e instanceof Invalid || e instanceof Rejected)) throw e;
        outcomes.push(e);
      }
    }
    return [outcomes, state];
  },
  /** The records an array of mutations emits (`{ topic, key, value, headers }`). */
  emitted(mutations) {
    return mutations.filter((m) => m.tag === 'emit').map((m) => m.val);
  },
  /** The table writes (`upsert`, `delete`, `add`) of an array of mutations, as `{ tag, val }`. */
  tableWrites(mutations) {
    return mutations.filter((m) => m.tag === 'upsert' || m.tag === 'delete' || m.tag === 'add');
  },
  /**
   * The value the first upsert into `table` gives `column`, in the contract's shape
   * (`{ tag: 'text', val: 'o-1' }`); undefined if none.
   */
  upserted(mutations, table, column) {
    for (const m of mutations) {
      if (m.tag !== 'upsert' || m.val.table !== table) continue;
      const cell = m.val.row.find((c) => c.column === column);
      if (cell) return cell.value;
    }
    return undefined;
  },
  /** The key's state once these mutations apply, from `before`. */
  stateAfter(mutations, before) {
    let after = bytes(before, 'a state');
    for (const m of mutations) {
      if (m.tag === 'set-state') after = m.val;
      if (m.tag === 'clear-state') after = undefined;
    }
    return after;
  },
};
