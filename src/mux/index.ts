export * from './transport.js';
export * from './clock.js';
export * from './errors.js';
export * from './stream.js';
export * from './session.js';
