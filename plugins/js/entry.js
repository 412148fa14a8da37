// The component's entry, written by `sluice plugin build` beside the plugin: it hands the
// contract's host imports to the helper (sluice.js) and turns the plugin's `Invalid` and
// `Rejected` into the contract's handler-error. Any other exception traps.
import * as host from '{host}';
import * as plugin from '{plugin}';

globalThis.__sluiceHost = host;
// A copy of the exports: `selfTest` is optional, and the bundler warns of a missing name read
// from the module itself.
const exported = Object.assign({}, plugin);

// `state`: the message key's state (contract 0.2), which the helper's `state()` reads during
// the call.
export function handle(message, state) {
  let mutations;
  globalThis.__sluiceState = state;
  try {
    mutations = plugin.handle(message);
  } catch (e) {
    if (e && (e.sluiceError === 'invalid-message' || e.sluiceError === 'rejected')) {
      throw { tag: e.sluiceError, val: String(e.reason) };
    }
    throw e;
  } finally {
    globalThis.__sluiceState = undefined;
  }
  if (!Array.isArray(mutations)) {
    throw new TypeError(`handle must return an array of mutations, got ${typeof mutations}`);
  }
  return mutations;
}

export function selfTest() {
  if (typeof exported.selfTest !== 'function') return;
  try {
    exported.selfTest();
  } catch (e) {
    throw `${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : e}`;
  }
}
