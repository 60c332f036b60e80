"""Drop-in adapters for the APIs satchel users come from: change one import, not the code.

One small module per API: ``dff``, ``anystore``, ``dify``, ``rstore``, ``keyval``. Each
only translates names and conventions onto `satchel.Store`: key rules, expiry, patterns
and atomicity are the Store's, and where the original API behaves differently on purpose
(values keep their types, an expired key is free for a write-if-absent, a pattern
without a wildcard is one exact key) satchel's rule wins.
"""
