export * from './frames.js';
export * from './reasons.js';
export * from './metadata.js';
export * from './encode.js';
export * from './decode.js';
export * from './stream-decoder.js';
