// Fixture: a JavaScript plugin that tries what the payload names and reports what it got as a
// rejection (`<what>: <error>`), so the test reads what the sandbox answered. Anything it should
// not have reached shows as a mutation of `LEAKED-<what>` (an unknown product): the test fails
// on it. `loop`, `alloc`, `recurse` and `crash` end the call the hard way; anything else takes
// one unit of CATALOG-0001.
import * as sluice from '../../../../plugins/js/sluice.js';

const leaked = (what) => [sluice.stock(`LEAKED-${what}`, -1)];
const refused = (what, e) => {
  throw new sluice.Rejected(`${what}: ${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : e}`);
};

export function handle(message) {
  const what = new TextDecoder().decode(message.payload);
  switch (what) {
    case 'fetch': {
      try {
        // ComponentizeJS without fetch: the call that reaches for it traps (its record only).
        const pending = fetch('http://127.0.0.1:5432/');
        if (pending && typeof pending.then === 'function') {
          throw new Error('fetch returned a promise');
        }
      } catch (e) {
        refused(what, e);
      }
      return leaked(what);
    }
    case 'env': {
      const env = globalThis.process && globalThis.process.env;
      if (env && Object.keys(env).length > 0) return leaked(what);
      throw new sluice.Rejected('env: no process environment');
    }
    case 'modules': {
      const names = ['require', 'process', 'Deno', 'Bun'].filter((n) => n in globalThis);
      if (names.includes('require')) return leaked(what);
      throw new sluice.Rejected(`modules: globals present: ${names.join(',') || 'none'}`);
    }
    case 'clocks': {
      const now = Date.now();
      const start = performance.now();
      if (now < 1.7e12 || performance.now() < start) return leaked(what);
      return [sluice.stock('CATALOG-0001', -1)];
    }
    case 'timer': {
      // A timer cannot fire after the call returns: the call decides without it.
      setTimeout(() => {
        throw new Error('a timer fired after the call');
      }, 0);
      return [sluice.stock('CATALOG-0001', -1)];
    }
    case 'sleep': {
      const until = Date.now() + 20000;
      while (Date.now() < until) {
        // a sleep is a busy wait in JavaScript: the deadline ends it
      }
      return leaked(what);
    }
    case 'loop':
      for (;;) {
        // spin
      }
    case 'alloc': {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    case 'recurse': {
      const down = (n) => down(n + 1) + 1;
      return [sluice.stock('CATALOG-0001', -down(0))];
    }
    case 'crash':
      throw new Error('hostile plugin throws on purpose');
    default:
      return [sluice.stock('CATALOG-0001', -1)];
  }
}
