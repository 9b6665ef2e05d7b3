"""The verbs, one module per verb or pair: add, fetch, push, switch, checkout, verify, update, project (lock, sync), remove, usage, doctor."""
