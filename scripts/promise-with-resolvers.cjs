// Promise.withResolvers (ES2024) for Node 20, which lacks it and some of js-ipfs's
// dependencies call it. Preload with `node --require ./scripts/promise-with-resolvers.cjs`.
'use strict'
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
