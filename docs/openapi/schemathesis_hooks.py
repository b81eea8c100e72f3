"""schemathesis hooks for tests/it/openapi.rs.

Two rules of the contract (docs/contract.md §1) that JSON Schema cannot state,
so that a generated body can be "schema-valid" and still be refused, rightly,
with 400 invalid_event. Such bodies are skipped, not sent:

- `amount` is an integer with no fraction part; JSON Schema counts 4078.0 as
  an integer, the contract refuses it.
- the limits of `item`, `region`, `terminal`, the attributes (spoold) and a
  batch's `node` (ledgerd) are UTF-8 bytes; JSON Schema's maxLength counts
  characters (the same only for ASCII).
"""

import schemathesis

BYTES_MAX = {"item": 256, "region": 128, "terminal": 128}
NODE_BYTES_MAX = 128
ATTRIBUTE_KEY_BYTES_MAX = 64
ATTRIBUTE_VALUE_BYTES_MAX = 1024


def utf8_len(s):
    return len(s.encode("utf-8", "surrogatepass"))


def within_byte_limits(body):
    for field, limit in BYTES_MAX.items():
        value = body.get(field)
        if isinstance(value, str) and utf8_len(value) > limit:
            return False
    attributes = body.get("attributes")
    if isinstance(attributes, dict):
        for k, v in attributes.items():
            if utf8_len(k) > ATTRIBUTE_KEY_BYTES_MAX:
                return False
            if isinstance(v, str) and utf8_len(v) > ATTRIBUTE_VALUE_BYTES_MAX:
                return False
    return True


@schemathesis.hook
def filter_body(ctx, body):
    if not isinstance(body, dict):
        return True
    node = body.get("node")
    if isinstance(node, str) and "events" in body and utf8_len(node) > NODE_BYTES_MAX:
        return False
    amount = body.get("amount")
    if isinstance(amount, float) and amount.is_integer():
        return False
    return within_byte_limits(body)
