// Well-formed Unicode: a JavaScript string holds UTF-16 code units and may hold a lone surrogate,
// which UTF-8 (protobuf strings, the API's JSON) cannot hold exactly. Pure.

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether a string has no lone surrogate (so UTF-8 holds it exactly). */
export function isWellFormedUnicode(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}
