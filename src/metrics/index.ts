export * from './definitions.js';
export * from './metrics.js';
