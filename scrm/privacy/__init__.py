"""Customers' personal data under PIPL: export everything held about one customer, erase it, keep it no longer
than the retention settings allow, and never let an in-flight event bring erased data back.

A bottom-layer package: it reads and writes the tables through :mod:`scrm.models` only, so the feature packages
(sync, intent) can consult :mod:`scrm.privacy.tombstones` before they write about a customer.

- :mod:`~scrm.privacy.tombstones` — salted hashes of erased customers and the erasure time.
- :mod:`~scrm.privacy.holdings` — where a customer's rows are, table by table (one list for export and erase),
  and the tables that hold no personal data, each with its reason.
- :mod:`~scrm.privacy.redact` — the anonymiser of free text and JSON.
- :mod:`~scrm.privacy.export` / :mod:`~scrm.privacy.erase` — the two requests.
- :mod:`~scrm.privacy.retention` — the batched purges the leader runs.
"""
