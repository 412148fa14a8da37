// The component's entry, written by `sluice plugin build` beside the plugin: it hands the
// contract's host imports to the helper (sluice.js) and turns the plugin's `Invalid` and
// `Rejected` into the contract's handler-error. Any other exception traps.
import * as host from 'sluice:handler/host@0.1.0';
import * as plugin from '{plugin}';

globalThis.__sluiceHost = host;
// A copy of the exports: `selfTest` is optional, and the bundler warns of a missing name read
// from the module itself.
const exported = Object.assign({}, plugin);

export function handle(message) {
  let mutations;
  try {
    mutations = plugin.handle(message);
  } catch (e) {
    if (e && (e.sluiceError === 'invalid-message' || e.sluiceError === 'rejected')) {
      throw { tag: e.sluiceError, val: String(e.reason) };
    }
    throw e;
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
